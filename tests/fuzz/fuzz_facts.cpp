// libFuzzer target: any bytes either parse as a fact file (bad lines reported, never crashing) or
// raise knprobe::Error; every kept fact has a valid id and language codes, ids are unique, and
// the file-name stems made from the ids stay inside a folder and stay distinct.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>

#include "knprobe/data/facts.hpp"
#include "knprobe/io/files.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto ff =
        knprobe::parse_facts(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    std::set<std::string> ids, stems;
    for (const auto& f : ff.facts) {
      if (!ids.insert(f.id).second) std::abort();  // duplicates must be reported, not kept
      for (const auto* m : {&f.prompts, &f.answers})
        for (const auto& [lang, text] : *m)
          if (!knprobe::valid_language_code(lang) || text.empty() ||
              text.size() > knprobe::k_max_fact_text)
            std::abort();
      const std::string stem = knprobe::io::safe_file_stem(f.id);
      if (stem.empty() || stem.find('/') != std::string::npos ||
          stem.find('\0') != std::string::npos || stem.rfind(".", 0) == 0 || stem.size() > 96)
        std::abort();
      if (!stems.insert(stem).second) std::abort();  // distinct ids, distinct files
    }
  } catch (const knprobe::Error&) {
  }
  return 0;
}
