// Uses the installed / subdirectory knprobe: a softmax and the version string.
#include <cstdio>
#include <knprobe/knprobe.hpp>

int main() {
  knprobe::MatrixF x(1, 3), y;
  x << 1.0f, 2.0f, 3.0f;
  knprobe::blocks::softmax::forward<float>(x, y);
  std::printf("knprobe %s consumer: softmax sum %.6f\n", KNPROBE_VERSION_STRING, y.sum());
  return std::abs(y.sum() - 1.0f) < 1e-6f ? 0 : 1;
}
