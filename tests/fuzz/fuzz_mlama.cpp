// libFuzzer target: an mLAMA folder made of fuzz bytes (templates and facts of two languages, a
// relation folder and a single-file relation) loads for decoders and encoders or raises
// knprobe::Error; every fact has a prompt and an answer in both languages.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_support.hpp"
#include "knprobe/data/mlama.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = knprobe::fuzz::split(data, size, 6);
  const auto root = knprobe::fuzz::scratch();
  using knprobe::fuzz::put;
  put(root / "en" / "templates" / "train.jsonl", parts[0]);
  put(root / "en" / "P1" / "train.jsonl", parts[1]);
  put(root / "en" / "P2.jsonl", parts[2]);
  put(root / "fr" / "templates" / "dev.jsonl", parts[3]);
  put(root / "fr" / "P1" / "dev.jsonl", parts[4]);
  put(root / "fr" / "P2.jsonl", parts[5]);
  for (const auto objective : {knprobe::Objective::causal_lm, knprobe::Objective::masked_lm}) {
    try {
      knprobe::MlamaOptions o;
      o.languages = {"en", "fr"};
      o.objective = objective;
      const auto d = knprobe::load_mlama(root, o);
      for (const auto& f : d.facts)
        if (f.prompts.size() != 2 || f.answers.size() != 2) std::abort();
    } catch (const knprobe::Error&) {
    }
  }
  return 0;
}
