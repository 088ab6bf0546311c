// libFuzzer target: any bytes either parse as safetensors or raise knprobe::Error — never crash.
#include <cstddef>
#include <cstdint>

#include "knprobe/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    knprobe::io::SafetensorsFile f(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size), "fuzz");
    for (const auto& name : f.names()) {
      const auto& info = f.info(name);
      if (info.numel() < (1 << 16) &&
          (info.dtype == knprobe::io::SafeDtype::f32 || info.dtype == knprobe::io::SafeDtype::f16 ||
           info.dtype == knprobe::io::SafeDtype::bf16))
        (void)f.to_float(name);
    }
  } catch (const knprobe::Error&) {
  }
  return 0;
}
