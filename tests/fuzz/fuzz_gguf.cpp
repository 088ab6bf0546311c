// libFuzzer target: any bytes either parse as GGUF (and dequantize) or raise knprobe::Error.
#include <cstddef>
#include <cstdint>

#include "knprobe/io/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    knprobe::io::GgufFile f(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size), "fuzz");
    for (const auto& t : f.tensors())
      if (t.numel() < (1 << 16) && knprobe::io::ggml_type_info(t.type).supported)
        (void)f.dequantize(t.name);
  } catch (const knprobe::Error&) {
  }
  return 0;
}
