// Milliseconds of a 3x3, stride-1, padding-1 convolution's three passes in oneDNN on the CPU:
// what a native convolution kernel could reach, against MLX's passes (profile_conv.py).
//
// Build and run (Debian/Ubuntu: apt install libdnnl-dev g++):
//
//   g++ -O2 -o /tmp/onednn_conv benchmarks/onednn_conv.cpp -ldnnl
//   OMP_NUM_THREADS=2 /tmp/onednn_conv [batch in_channels size out_channels] [plain]
//
// Defaults: simple_cnn's 64->128 convolution at 16x16, batch 128. Activations are NHWC.
// The weights take the layout oneDNN picks (format_tag::any); "plain" forces MLX's OHWI.
// Each pass: one untimed call, then the best of 5.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "oneapi/dnnl/dnnl.hpp"

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

static void report(const char* name, double flops, stream& s, const std::function<void()>& run) {
  run();
  s.wait();
  double best = 1e30;
  for (int i = 0; i < 5; i++) {
    auto start = std::chrono::steady_clock::now();
    run();
    s.wait();
    auto elapsed = std::chrono::steady_clock::now() - start;
    best = std::min(best, std::chrono::duration<double, std::milli>(elapsed).count());
  }
  std::printf("| %s | %.1f | %.0f |\n", name, best, flops / best / 1e6);
}

int main(int argc, char** argv) {
  long n = 128, c = 64, size = 16, o = 128;
  if (argc >= 5) {
    n = std::atol(argv[1]);
    c = std::atol(argv[2]);
    size = std::atol(argv[3]);
    o = std::atol(argv[4]);
  }
  bool plain = argc >= 6 && std::strcmp(argv[5], "plain") == 0;
  engine cpu(engine::kind::cpu, 0);
  stream s(cpu);
  memory::dims src_dims = {n, c, size, size}, dst_dims = {n, o, size, size};
  memory::dims wei_dims = {o, c, 3, 3}, strides = {1, 1}, pad = {1, 1};
  auto src_md = memory::desc(src_dims, dt::f32, tag::nhwc);
  auto dst_md = memory::desc(dst_dims, dt::f32, tag::nhwc);
  auto wei_md = memory::desc(wei_dims, dt::f32, plain ? tag::ohwi : tag::any);

  auto fwd_pd = convolution_forward::primitive_desc(
      convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                src_md, wei_md, dst_md, strides, pad, pad),
      cpu);
  auto data_pd = convolution_backward_data::primitive_desc(
      convolution_backward_data::desc(algorithm::convolution_direct, src_md, wei_md, dst_md,
                                      strides, pad, pad),
      cpu, fwd_pd);
  auto weights_pd = convolution_backward_weights::primitive_desc(
      convolution_backward_weights::desc(algorithm::convolution_direct, src_md, wei_md, dst_md,
                                         strides, pad, pad),
      cpu, fwd_pd);
  memory src(src_md, cpu), dst(dst_md, cpu), dsrc(src_md, cpu);
  memory wei(fwd_pd.weights_desc(), cpu), wei_data(data_pd.weights_desc(), cpu);
  memory dwei(weights_pd.diff_weights_desc(), cpu);
  auto forward = convolution_forward(fwd_pd);
  auto input_grad = convolution_backward_data(data_pd);
  auto weight_grad = convolution_backward_weights(weights_pd);

  double flops = 2.0 * n * size * size * o * c * 9;
  std::printf("batch %ld, %ld->%ld channels, %ldx%ld, weights %s, oneDNN %d.%d.%d\n\n", n, c, o,
              size, size, plain ? "OHWI" : "oneDNN's layout", dnnl_version()->major,
              dnnl_version()->minor, dnnl_version()->patch);
  std::printf("| pass | ms | GFLOP/s |\n|---|---|---|\n");
  report("forward", flops, s, [&] {
    forward.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  });
  report("input gradient", flops, s, [&] {
    input_grad.execute(
        s, {{DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_WEIGHTS, wei_data}, {DNNL_ARG_DIFF_SRC, dsrc}});
  });
  report("weight gradient", flops, s, [&] {
    weight_grad.execute(
        s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_DIFF_WEIGHTS, dwei}});
  });
  return 0;
}
