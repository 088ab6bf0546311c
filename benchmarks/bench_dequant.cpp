// Dequantization throughput of the GGUF block types Gemma 3 270M's Q4_K_M file uses (Q6_K for the
// 262 144 × 640 embedding / output head, Q8_0, Q5_0 and Q4_K in the layers), one thread; Q6_K also
// against its per-element form (scales indexed per element, as before they were hoisted; the
// compiler does not vectorize it) in the same process: the ratio, and a check that the values are
// bit-identical. Random block bytes (the cost does not depend on the values).
//   bench_dequant [million weights per type = 42] [reps = 3]
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "knprobe/io/dequant.hpp"
#include "timing.hpp"

using namespace knprobe;
using namespace knprobe::io::detail;

namespace {

/// Q6_K as written before the scales were hoisted (the form the compiler did not vectorize).
void reference_q6_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* ql = b;
  const std::uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const std::int8_t*>(b + 192);
  const float d = fp16_at(b + 208);
  for (int h = 0; h < 2; ++h) {
    const std::uint8_t* l8 = ql + 64 * h;
    const std::uint8_t* h8 = qh + 32 * h;
    const std::int8_t* s8 = sc + 8 * h;
    float* out = y + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int s = l / 16;
      const int q1 = ((l8[l] & 0xF) | ((h8[l] & 3) << 4)) - 32;
      const int q2 = ((l8[l + 32] & 0xF) | (((h8[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((l8[l] >> 4) | (((h8[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((l8[l + 32] >> 4) | (((h8[l] >> 6) & 3) << 4)) - 32;
      out[l] = d * s8[s] * static_cast<float>(q1);
      out[l + 32] = d * s8[s + 2] * static_cast<float>(q2);
      out[l + 64] = d * s8[s + 4] * static_cast<float>(q3);
      out[l + 96] = d * s8[s + 6] * static_cast<float>(q4);
    }
  }
}

/// Throughput of the library's dequant_blocks for one type and, when `reference` is given, of the
/// reference per block (same process, same bytes) with the ratio and a bit-identity check.
template <BlockDequant F, std::uint32_t Block, std::uint32_t Size>
void report(const char* name, std::size_t scale_at, BlockDequant reference, std::size_t weights,
            int reps) {
  const std::size_t blocks = weights / Block;
  std::vector<std::uint8_t> bytes(blocks * Size);
  std::mt19937 rng(7);
  for (auto& x : bytes) x = static_cast<std::uint8_t>(rng());
  for (std::size_t i = 0; i < blocks; ++i)  // finite fp16 scales: clear sign and top exponent bit
    bytes[i * Size + scale_at + 1] &= 0x3F;
  std::vector<float> a(blocks * Block), b(blocks * Block);
  const double t_lib = bench::best_seconds(
      reps, [&] { dequant_blocks<F, Block, Size>(bytes.data(), blocks, a.data()); });
  std::printf("%-5s %8.0f M weights/s", name, double(weights) / t_lib / 1e6);
  if (reference) {
    const double t_ref = bench::best_seconds(reps, [&] {
      for (std::size_t i = 0; i < blocks; ++i)
        reference(bytes.data() + i * Size, b.data() + i * Block);
    });
    std::printf("; per-element reference %8.0f M weights/s: %.2fx, values %s",
                double(weights) / t_ref / 1e6, t_ref / t_lib,
                std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0 ? "bit-identical"
                                                                               : "DIFFERENT");
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t weights = (argc > 1 ? std::stoul(argv[1]) : 42) * 1000000 / 256 * 256;
  const int reps = argc > 2 ? std::stoi(argv[2]) : 3;
  std::printf("one thread, %zu weights per type\n", weights);
  report<&dequant_q6_k, 256, 210>("Q6_K", 208, &reference_q6_k, weights, reps);
  report<&dequant_q8_0, 32, 34>("Q8_0", 0, nullptr, weights, reps);
  report<&dequant_q5_0, 32, 22>("Q5_0", 0, nullptr, weights, reps);
  report<&dequant_q4_k, 256, 144>("Q4_K", 0, nullptr, weights, reps);
  return 0;
}
