#pragma once
// ggml tensor types and their dequantization to float (block layouts as in ggml-quants.c; see
// docs/MODELS.md §1.5). A row of ne[0] values is ne[0]/block_size consecutive blocks.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "knprobe/core/error.hpp"
#include "knprobe/core/half.hpp"
#include "knprobe/core/parallel.hpp"

namespace knprobe::io {

/// ggml type ids as written in GGUF tensor infos.
enum class GgmlType : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  bf16 = 30,
};

/// Elements per block and bytes per block of a type; supported() says whether we dequantize it.
struct GgmlTypeInfo {
  const char* name;
  std::uint32_t block_size;
  std::uint32_t type_size;
  bool supported;
};

inline GgmlTypeInfo ggml_type_info(std::uint32_t t) {
  switch (static_cast<GgmlType>(t)) {
    case GgmlType::f32:
      return {"F32", 1, 4, true};
    case GgmlType::f16:
      return {"F16", 1, 2, true};
    case GgmlType::bf16:
      return {"BF16", 1, 2, true};
    case GgmlType::q4_0:
      return {"Q4_0", 32, 18, true};
    case GgmlType::q4_1:
      return {"Q4_1", 32, 20, true};
    case GgmlType::q5_0:
      return {"Q5_0", 32, 22, true};
    case GgmlType::q5_1:
      return {"Q5_1", 32, 24, true};
    case GgmlType::q8_0:
      return {"Q8_0", 32, 34, true};
    case GgmlType::q8_1:
      return {"Q8_1", 32, 36, false};
    case GgmlType::q2_k:
      return {"Q2_K", 256, 84, false};
    case GgmlType::q3_k:
      return {"Q3_K", 256, 110, false};
    case GgmlType::q4_k:
      return {"Q4_K", 256, 144, true};
    case GgmlType::q5_k:
      return {"Q5_K", 256, 176, true};
    case GgmlType::q6_k:
      return {"Q6_K", 256, 210, true};
    case GgmlType::q8_k:
      return {"Q8_K", 256, 292, false};
  }
  return {"unknown", 0, 0, false};
}

namespace detail {

inline float fp16_at(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

/// 6-bit scale and min of sub-block j of a Q4_K / Q5_K block (12 packed bytes).
inline void k_scale_min(int j, const std::uint8_t* s, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = static_cast<std::uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    m = static_cast<std::uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

inline void dequant_q4_0(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b);
  const std::uint8_t* qs = b + 2;
  for (int l = 0; l < 16; ++l) {
    y[l] = d * static_cast<float>((qs[l] & 0xF) - 8);
    y[l + 16] = d * static_cast<float>((qs[l] >> 4) - 8);
  }
}

inline void dequant_q4_1(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b), m = fp16_at(b + 2);
  const std::uint8_t* qs = b + 4;
  for (int l = 0; l < 16; ++l) {
    y[l] = d * static_cast<float>(qs[l] & 0xF) + m;
    y[l + 16] = d * static_cast<float>(qs[l] >> 4) + m;
  }
}

inline void dequant_q5(const std::uint8_t* b, float* y, bool has_min) {
  const float d = fp16_at(b);
  const float m = has_min ? fp16_at(b + 2) : 0.0f;
  const std::uint8_t* p = b + (has_min ? 4 : 2);
  std::uint32_t qh;
  std::memcpy(&qh, p, 4);
  const std::uint8_t* qs = p + 4;
  for (int l = 0; l < 16; ++l) {
    const int lo = (qs[l] & 0xF) | (((qh >> l) & 1u) << 4);
    const int hi = (qs[l] >> 4) | (((qh >> (l + 16)) & 1u) << 4);
    if (has_min) {
      y[l] = d * static_cast<float>(lo) + m;
      y[l + 16] = d * static_cast<float>(hi) + m;
    } else {
      y[l] = d * static_cast<float>(lo - 16);
      y[l + 16] = d * static_cast<float>(hi - 16);
    }
  }
}

inline void dequant_q8_0(const std::uint8_t* b, float* y) {
  const float d = fp16_at(b);
  for (int l = 0; l < 32; ++l) y[l] = d * static_cast<float>(static_cast<std::int8_t>(b[2 + l]));
}

inline void dequant_qk(const std::uint8_t* b, float* y, bool five_bit) {
  const float d = fp16_at(b), dmin = fp16_at(b + 2);
  const std::uint8_t* scales = b + 4;
  const std::uint8_t* qh = five_bit ? b + 16 : nullptr;
  const std::uint8_t* qs = b + (five_bit ? 48 : 16);
  for (int c = 0; c < 4; ++c) {
    std::uint8_t sc0, m0, sc1, m1;
    k_scale_min(2 * c, scales, sc0, m0);
    k_scale_min(2 * c + 1, scales, sc1, m1);
    const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
    for (int l = 0; l < 32; ++l) {
      int lo = qs[32 * c + l] & 0xF, hi = qs[32 * c + l] >> 4;
      if (five_bit) {
        lo += (qh[l] >> (2 * c)) & 1 ? 16 : 0;
        hi += (qh[l] >> (2 * c + 1)) & 1 ? 16 : 0;
      }
      y[64 * c + l] = d0 * static_cast<float>(lo) - mm0;
      y[64 * c + 32 + l] = d1 * static_cast<float>(hi) - mm1;
    }
  }
}

inline void dequant_q6_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* ql = b;
  const std::uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const std::int8_t*>(b + 192);
  const float d = fp16_at(b + 208);
  for (int h = 0; h < 2; ++h) {
    const std::uint8_t* l8 = ql + 64 * h;
    const std::uint8_t* h8 = qh + 32 * h;
    const std::int8_t* s8 = sc + 8 * h;
    float* out = y + 128 * h;
    // Two runs of 16 with the scales hoisted (the same products, d · scale first, so the values
    // are those of the per-element form; the fixed scale lets the compiler vectorize the run).
    for (int s = 0; s < 2; ++s) {
      const float d1 = d * s8[s], d2 = d * s8[s + 2], d3 = d * s8[s + 4], d4 = d * s8[s + 6];
      for (int l = 16 * s; l < 16 * s + 16; ++l) {
        const int q1 = ((l8[l] & 0xF) | ((h8[l] & 3) << 4)) - 32;
        const int q2 = ((l8[l + 32] & 0xF) | (((h8[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((l8[l] >> 4) | (((h8[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((l8[l + 32] >> 4) | (((h8[l] >> 6) & 3) << 4)) - 32;
        out[l] = d1 * static_cast<float>(q1);
        out[l + 32] = d2 * static_cast<float>(q2);
        out[l + 64] = d3 * static_cast<float>(q3);
        out[l + 96] = d4 * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace detail

namespace detail {

inline void dequant_f32(const std::uint8_t* b, float* y) {
  std::memcpy(y, b, 4);
}
inline void dequant_f16(const std::uint8_t* b, float* y) {
  *y = fp16_at(b);
}
inline void dequant_bf16(const std::uint8_t* b, float* y) {
  std::uint16_t h;
  std::memcpy(&h, b, 2);
  *y = bf16_to_float(h);
}
inline void dequant_q5_0(const std::uint8_t* b, float* y) {
  dequant_q5(b, y, false);
}
inline void dequant_q5_1(const std::uint8_t* b, float* y) {
  dequant_q5(b, y, true);
}
inline void dequant_q4_k(const std::uint8_t* b, float* y) {
  dequant_qk(b, y, false);
}
inline void dequant_q5_k(const std::uint8_t* b, float* y) {
  dequant_qk(b, y, true);
}

using BlockDequant = void (*)(const std::uint8_t*, float*);

/// Dequantizes `blocks` consecutive blocks of one type (the block function inlined, so the
/// compiler can vectorize across a row).
template <BlockDequant F, std::uint32_t BlockSize, std::uint32_t TypeSize>
void dequant_blocks(const std::uint8_t* b, std::size_t blocks, float* y) {
  for (std::size_t i = 0; i < blocks; ++i) F(b + i * TypeSize, y + i * BlockSize);
}

using BlocksDequant = void (*)(const std::uint8_t*, std::size_t, float*);

/// The many-block dequantizer of a supported type, nullptr otherwise.
inline BlocksDequant blocks_dequantizer(std::uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::f32:
      return dequant_blocks<dequant_f32, 1, 4>;
    case GgmlType::f16:
      return dequant_blocks<dequant_f16, 1, 2>;
    case GgmlType::bf16:
      return dequant_blocks<dequant_bf16, 1, 2>;
    case GgmlType::q4_0:
      return dequant_blocks<dequant_q4_0, 32, 18>;
    case GgmlType::q4_1:
      return dequant_blocks<dequant_q4_1, 32, 20>;
    case GgmlType::q5_0:
      return dequant_blocks<dequant_q5_0, 32, 22>;
    case GgmlType::q5_1:
      return dequant_blocks<dequant_q5_1, 32, 24>;
    case GgmlType::q8_0:
      return dequant_blocks<dequant_q8_0, 32, 34>;
    case GgmlType::q4_k:
      return dequant_blocks<dequant_q4_k, 256, 144>;
    case GgmlType::q5_k:
      return dequant_blocks<dequant_q5_k, 256, 176>;
    case GgmlType::q6_k:
      return dequant_blocks<dequant_q6_k, 256, 210>;
    default:
      return nullptr;
  }
}

}  // namespace detail

/// Dequantizes `n` consecutive values of ggml type `type` from `src` into `dst` (blocks in
/// parallel when there are many).
/// @pre n is a multiple of the type's block size and src holds n / block_size blocks.
inline void dequantize(std::uint32_t type, const std::byte* src, std::size_t n, float* dst) {
  const GgmlTypeInfo ti = ggml_type_info(type);
  const detail::BlocksDequant f = detail::blocks_dequantizer(type);
  KNPROBE_REQUIRE(ti.supported && f, FormatError, "dequantize: ggml type ", ti.name, " (", type,
                  ") is not supported");
  KNPROBE_REQUIRE(n % ti.block_size == 0, FormatError, "dequantize: ", n,
                  " values is not a multiple of the ", ti.name, " block size ", ti.block_size);
  const auto* b = reinterpret_cast<const std::uint8_t*>(src);
  const auto blocks = static_cast<std::int64_t>(n / ti.block_size);
  constexpr std::int64_t chunk = 4096;  // blocks per task
  const std::int64_t chunks = (blocks + chunk - 1) / chunk;
  KNPROBE_PARALLEL_FOR_IF(chunks > 4)
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::int64_t i = c * chunk, m = std::min(chunk, blocks - i);
    f(b + i * ti.type_size, static_cast<std::size_t>(m), dst + i * ti.block_size);
  }
}

/// Index of the first value of `n` values of ggml type `type` at `src` that dequantizes to a
/// non-finite number, or `n` when there is none. Reads only what can be non-finite: every element
/// of F32 / F16 / BF16, and the fp16 scales (d, and m / dmin) of the quantized blocks, whose
/// integer parts are always finite. One pass over the scales: cheap next to a forward pass.
/// @pre as for dequantize.
inline std::size_t first_non_finite(std::uint32_t type, const std::byte* src, std::size_t n) {
  const GgmlTypeInfo ti = ggml_type_info(type);
  const auto* b = reinterpret_cast<const std::uint8_t*>(src);
  auto bits16 = [](const std::uint8_t* p) {  // fp16 / bf16: exponent bits all ones = Inf / NaN
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    return h;
  };
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::f32:
      for (std::size_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, b + 4 * i, 4);
        if (!std::isfinite(v)) return i;
      }
      return n;
    case GgmlType::f16:
      for (std::size_t i = 0; i < n; ++i)
        if ((bits16(b + 2 * i) & 0x7C00u) == 0x7C00u) return i;
      return n;
    case GgmlType::bf16:
      for (std::size_t i = 0; i < n; ++i)
        if ((bits16(b + 2 * i) & 0x7F80u) == 0x7F80u) return i;
      return n;
    default:
      break;
  }
  // Offsets of the fp16 scales within a block (ggml-quants.c layouts; docs/MODELS.md §1.5).
  int at[2] = {0, -1};
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::q4_1:
    case GgmlType::q5_1:
    case GgmlType::q4_k:
    case GgmlType::q5_k:
      at[1] = 2;  // m / dmin right after d
      break;
    case GgmlType::q6_k:
      at[0] = 208;  // d last
      break;
    default:
      break;
  }
  const std::size_t blocks = ti.block_size ? n / ti.block_size : 0;
  for (std::size_t k = 0; k < blocks; ++k)
    for (int a : at)
      if (a >= 0 &&
          (bits16(b + k * ti.type_size + static_cast<std::size_t>(a)) & 0x7C00u) == 0x7C00u)
        return k * ti.block_size;
  return n;
}

}  // namespace knprobe::io
