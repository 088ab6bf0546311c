// Float32 error of layer_gradients: the float model against the double model of the same weights
// (a GGUF file dequantized), for three layers and three targets (the top-1 token, two others) at
// the last position of a 6-token prompt, 20 points on the straight path 0 → activation.
//   bench_float_error MODEL.gguf
#include <cstdio>
#include "knprobe/model/llama.hpp"
using namespace knprobe;
int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL\n", argv[0]);
    return 2;
  }
  const auto md = LlamaModel<double>::load(argv[1]);
  const auto mf = LlamaModel<float>::load(argv[1]);
  const std::vector<TokenId> ids = {2, 818, 5279, 529, 7001, 563};
  const auto td = md.trace(ids);
  const auto tf = mf.trace(ids);
  const int p = int(ids.size()) - 1;
  const Matrix<double> z = md.logits(td);
  Index best;
  z.row(p).maxCoeff(&best);
  for (int layer : {0, 9, 17}) {
    for (TokenId target : {TokenId(best), TokenId(9079), TokenId(1000)}) {
      Matrix<double> pts(20, md.ffn_width());
      for (int k = 0; k < 20; ++k) pts.row(k) = td.activations(layer).row(p) * (k / 19.0);
      const auto gd = md.layer_gradients(td, layer, p, pts, target);
      const auto gf = mf.layer_gradients(tf, layer, p, Matrix<float>(pts.cast<float>()), target);
      const double rel = (gf.gradients.cast<double>() - gd.gradients).cwiseAbs().maxCoeff() /
                         gd.gradients.cwiseAbs().maxCoeff();
      std::printf("layer %2d target %6d P %.4f: max |g32 - g64| / max |g64| = %.2e\n", layer,
                  int(target), gd.probabilities(19), rel);
    }
  }
}
