#pragma once
// Rebuilds the hash-defined checkpoints of tools/make_hf_dense_fixtures.py (real GPT-2 / mBERT
// configurations, too large to commit): element i of tensor `name` is
//   offset + scale · (2u − 1),  u = (splitmix64(fnv1a64(name) + i) >> 11) · 2⁻⁵³
// rounded to float32, written as a safetensors file next to the committed config.json so that
// the real loaders read it.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/paths.hpp"

namespace knprobe::testing {

inline std::uint64_t fnv1a64(const std::string& s) {
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ULL;
  return h;
}

inline std::uint64_t splitmix64(std::uint64_t x) {
  std::uint64_t z = x + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// Writes `dir`/model.safetensors from `fixture`/manifest.json and copies its config.json.
inline void write_hash_checkpoint(const std::filesystem::path& fixture,
                                  const std::filesystem::path& dir) {
  const auto man = read_json(fixture / "manifest.json");
  nlohmann::json header = nlohmann::json::object();
  std::uint64_t offset = 0;
  for (const auto& t : man["tensors"]) {
    std::uint64_t n = 1;
    for (auto s : t["shape"]) n *= s.get<std::uint64_t>();
    header[t["name"].get<std::string>()] = {
        {"dtype", "F32"}, {"shape", t["shape"]}, {"data_offsets", {offset, offset + 4 * n}}};
    offset += 4 * n;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h += ' ';
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  const std::uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  std::vector<float> buf;
  for (const auto& t : man["tensors"]) {
    std::uint64_t n = 1;
    for (auto s : t["shape"]) n *= s.get<std::uint64_t>();
    const std::uint64_t seed = fnv1a64(t["name"].get<std::string>());
    const double off = t["offset"], sc = t["scale"];
    buf.resize(n);
    for (std::uint64_t i = 0; i < n; ++i) {
      const double u = static_cast<double>(splitmix64(seed + i) >> 11) * 0x1p-53;
      buf[i] = static_cast<float>(off + sc * (2.0 * u - 1.0));
    }
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(4 * n));
  }
  std::filesystem::copy_file(fixture / "config.json", dir / "config.json");
}

}  // namespace knprobe::testing
