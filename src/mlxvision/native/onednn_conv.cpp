// 2-D convolution passes on the CPU through oneDNN, as MLX primitives.
//
// x: N×H×W×C (NHWC), w: O×KH×KW×C (OHWI), y: N×OH×OW×O, float32, groups 1, dilation 1.
// Each pass is one primitive; the forward pass's vjp builds the other two, so MLX's autodiff
// and streams treat them like its own operations. The weights go through oneDNN's blocked
// layout on each call: with a plain OHWI layout oneDNN falls back to reference kernels.
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <tuple>

#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>
#include <omp.h>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace nb = nanobind;
namespace mx = mlx::core;
using dnnl::memory;

namespace {

enum class Pass { forward, input_grad, weight_grad };

struct Geometry {
  long n, h, w, c, o, kh, kw, oh, ow, sh, sw, ph, pw;
  auto key() const { return std::make_tuple(n, h, w, c, o, kh, kw, sh, sw, ph, pw); }
  memory::desc src() const { return {{n, c, h, w}, memory::data_type::f32, memory::format_tag::nhwc}; }
  memory::desc dst() const { return {{n, o, oh, ow}, memory::data_type::f32, memory::format_tag::nhwc}; }
  memory::desc plain_weights() const {
    return {{o, c, kh, kw}, memory::data_type::f32, memory::format_tag::ohwi};
  }
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Primitives {
  dnnl::convolution_forward::primitive_desc forward;
  dnnl::convolution_backward_data::primitive_desc input_grad;
  dnnl::convolution_backward_weights::primitive_desc weight_grad;
};

std::shared_ptr<Primitives> primitives_for(const Geometry& g) {
  static std::map<decltype(g.key()), std::shared_ptr<Primitives>> cache;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = cache.find(g.key());
  if (found != cache.end()) return found->second;
  auto& engine = cpu_engine();
  auto weights = memory::desc({g.o, g.c, g.kh, g.kw}, memory::data_type::f32, memory::format_tag::any);
  memory::dims strides = {g.sh, g.sw}, left = {g.ph, g.pw};
  memory::dims right = {(g.oh - 1) * g.sh + g.kh - g.h - g.ph, (g.ow - 1) * g.sw + g.kw - g.w - g.pw};
  auto algorithm = dnnl::algorithm::convolution_direct;
  auto forward = dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algorithm, g.src(), weights,
                                      g.dst(), strides, left, right),
      engine);
  auto input_grad = dnnl::convolution_backward_data::primitive_desc(
      dnnl::convolution_backward_data::desc(algorithm, g.src(), weights, g.dst(), strides, left, right),
      engine, forward);
  auto weight_grad = dnnl::convolution_backward_weights::primitive_desc(
      dnnl::convolution_backward_weights::desc(algorithm, g.src(), weights, g.dst(), strides, left,
                                               right),
      engine, forward);
  auto made = std::make_shared<Primitives>(Primitives{forward, input_grad, weight_grad});
  cache[g.key()] = made;
  return made;
}

void run_pass(Pass pass, const Geometry& g, const float* a, const float* b, float* out) {
  auto p = primitives_for(g);
  auto& engine = cpu_engine();
  dnnl::stream stream(engine);
  if (pass == Pass::forward) {  // a = x, b = w
    memory src(g.src(), engine, const_cast<float*>(a)), dst(g.dst(), engine, out);
    memory plain(g.plain_weights(), engine, const_cast<float*>(b)), weights(p->forward.weights_desc(), engine);
    dnnl::reorder(plain, weights).execute(stream, plain, weights);
    dnnl::convolution_forward(p->forward).execute(
        stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
  } else if (pass == Pass::input_grad) {  // a = dy, b = w
    memory ddst(g.dst(), engine, const_cast<float*>(a)), dsrc(g.src(), engine, out);
    memory plain(g.plain_weights(), engine, const_cast<float*>(b));
    memory weights(p->input_grad.weights_desc(), engine);
    dnnl::reorder(plain, weights).execute(stream, plain, weights);
    dnnl::convolution_backward_data(p->input_grad).execute(
        stream, {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DIFF_SRC, dsrc}});
  } else {  // a = x, b = dy
    memory src(g.src(), engine, const_cast<float*>(a)), ddst(g.dst(), engine, const_cast<float*>(b));
    memory plain(g.plain_weights(), engine, out), dweights(p->weight_grad.diff_weights_desc(), engine);
    dnnl::convolution_backward_weights(p->weight_grad).execute(
        stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DIFF_WEIGHTS, dweights}});
    dnnl::reorder(dweights, plain).execute(stream, dweights, plain);
  }
  stream.wait();
}

class OneDnnConv : public mx::UnaryPrimitive {
 public:
  OneDnnConv(mx::Stream stream, Pass pass, Geometry geometry, int threads)
      : mx::UnaryPrimitive(stream), pass_(pass), g_(geometry), threads_(threads) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    out.set_data(mx::allocator::malloc(out.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    encoder.set_input_array(inputs[0]);
    encoder.set_input_array(inputs[1]);
    encoder.set_output_array(out);
    encoder.dispatch([pass = pass_, g = g_, threads = threads_, a = inputs[0].data<float>(),
                      b = inputs[1].data<float>(), y = out.data<float>()]() {
      omp_set_num_threads(threads);
      run_pass(pass, g, a, b, y);
    });
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override {
    throw std::runtime_error("OneDnnConv runs on the CPU only");
  }

  std::vector<mx::array> vjp(const std::vector<mx::array>& primals,
                             const std::vector<mx::array>& cotangents,
                             const std::vector<int>& argnums,
                             const std::vector<mx::array>& outputs) override;

  const char* name() const override { return "OneDnnConv"; }

 private:
  Pass pass_;
  Geometry g_;
  int threads_;
};

mx::array make_pass(Pass pass, const Geometry& g, int threads, const mx::array& a, const mx::array& b) {
  auto stream = mx::default_stream(mx::Device::cpu);
  mx::Shape shape = pass == Pass::forward      ? mx::Shape{int(g.n), int(g.oh), int(g.ow), int(g.o)}
                    : pass == Pass::input_grad ? mx::Shape{int(g.n), int(g.h), int(g.w), int(g.c)}
                                               : mx::Shape{int(g.o), int(g.kh), int(g.kw), int(g.c)};
  return mx::array(shape, mx::float32, std::make_shared<OneDnnConv>(stream, pass, g, threads),
                   {mx::contiguous(a, false, stream), mx::contiguous(b, false, stream)});
}

std::vector<mx::array> OneDnnConv::vjp(const std::vector<mx::array>& primals,
                                       const std::vector<mx::array>& cotangents,
                                       const std::vector<int>& argnums,
                                       const std::vector<mx::array>&) {
  if (pass_ != Pass::forward) throw std::runtime_error("OneDnnConv: no second derivatives");
  std::vector<mx::array> grads;
  for (int argnum : argnums) {
    grads.push_back(argnum == 0 ? make_pass(Pass::input_grad, g_, threads_, cotangents[0], primals[1])
                                : make_pass(Pass::weight_grad, g_, threads_, primals[0], cotangents[0]));
  }
  return grads;
}

Geometry geometry(const mx::Shape& x, const mx::Shape& w, int sh, int sw, int ph, int pw) {
  if (x.size() != 4 || w.size() != 4 || x[3] != w[3]) {
    throw std::invalid_argument("conv2d: expected NHWC input and OHWI weight with equal channels");
  }
  Geometry g{x[0], x[1], x[2], x[3], w[0], w[1], w[2], 0, 0, sh, sw, ph, pw};
  g.oh = (g.h + 2 * ph - g.kh) / sh + 1;
  g.ow = (g.w + 2 * pw - g.kw) / sw + 1;
  if (g.oh < 1 || g.ow < 1) throw std::invalid_argument("conv2d: the kernel is larger than the input");
  return g;
}

void check_float32(const mx::array& a, const char* name) {
  if (a.dtype() != mx::float32) throw std::invalid_argument(std::string(name) + ": expected float32");
}

}  // namespace

NB_MODULE(_mlxvision_onednn, m) {
  m.doc() = "oneDNN convolution passes as MLX primitives (CPU, float32, NHWC/OHWI).";
  m.def("conv2d", [](const mx::array& x, const mx::array& w, int sh, int sw, int ph, int pw, int threads) {
    check_float32(x, "x");
    check_float32(w, "w");
    return make_pass(Pass::forward, geometry(x.shape(), w.shape(), sh, sw, ph, pw), threads, x, w);
  });
  m.def("input_grad", [](const mx::array& dy, const mx::array& w, std::vector<int> x_shape, int sh, int sw,
                         int ph, int pw, int threads) {
    mx::Shape xs(x_shape.begin(), x_shape.end());
    return make_pass(Pass::input_grad, geometry(xs, w.shape(), sh, sw, ph, pw), threads, dy, w);
  });
  m.def("weight_grad", [](const mx::array& x, const mx::array& dy, std::vector<int> w_shape, int sh, int sw,
                          int ph, int pw, int threads) {
    mx::Shape ws(w_shape.begin(), w_shape.end());
    return make_pass(Pass::weight_grad, geometry(x.shape(), ws, sh, sw, ph, pw), threads, x, dy);
  });
}
