#pragma once
// Traditional → simplified Chinese through OpenCC (Debian libopencc-dev, config "t2s.json"), the
// normalisation mLAMA's Chinese data needs (its labels mix both scripts). Available when the
// build found OpenCC (KNPROBE_HAS_OPENCC); otherwise `to_simplified` throws a clear Error.

#include <memory>
#include <string>

#include "knprobe/core/error.hpp"

#if KNPROBE_HAS_OPENCC
#include <opencc/opencc.h>
#endif

namespace knprobe {

class ChineseConverter {
 public:
  /// Opens OpenCC with `config` ("t2s.json": traditional → simplified).
  explicit ChineseConverter(const std::string& config = "t2s.json") {
#if KNPROBE_HAS_OPENCC
    const opencc_t h = opencc_open(config.c_str());
    KNPROBE_REQUIRE(h != reinterpret_cast<opencc_t>(-1), Error, "OpenCC: cannot open config '",
                    config, "' (", opencc_error(), ")");
    handle_ = std::shared_ptr<void>(h, [](void* p) { opencc_close(p); });
#else
    throw Error(
        "OpenCC support was not built (install libopencc-dev and reconfigure) — needed "
        "to convert '" +
        config + "'");
#endif
  }

  /// The simplified-Chinese form of UTF-8 `text` (other scripts pass through unchanged).
  std::string convert(const std::string& text) const {
#if KNPROBE_HAS_OPENCC
    char* out = opencc_convert_utf8(handle_.get(), text.data(), text.size());
    KNPROBE_REQUIRE(out != nullptr, Error, "OpenCC: conversion failed (", opencc_error(), ")");
    std::string s(out);
    opencc_convert_utf8_free(out);
    return s;
#else
    return text;
#endif
  }

 private:
  std::shared_ptr<void> handle_;
};

}  // namespace knprobe
