// Run a model exported by mlxvision (`mlxvision export RUN` or export_mlxfn) from C++.
//
// The .mlxfn file holds the whole forward pass: no Python and no model code are needed.
// Input: NHWC float32 images, normalized as in training; output: logits.
//
//   classify MODEL.mlxfn HEIGHT WIDTH CHANNELS
#include <iostream>
#include <string>

#include "mlx/mlx.h"

namespace mx = mlx::core;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: " << argv[0] << " MODEL.mlxfn HEIGHT WIDTH CHANNELS\n";
    return 2;
  }
  auto forward = mx::import_function(argv[1]);
  int height = std::stoi(argv[2]), width = std::stoi(argv[3]), channels = std::stoi(argv[4]);

  // One image of the exported batch size (1), NHWC. Replace with real, normalized pixels.
  auto images = mx::random::normal({1, height, width, channels});
  auto logits = forward({images})[0];
  auto predicted = mx::argmax(logits, -1);
  mx::eval(predicted);
  std::cout << "logits shape (" << logits.shape(0) << ", " << logits.shape(1) << ")\n"
            << "predicted class " << predicted.item<uint32_t>() << std::endl;
  return 0;
}
