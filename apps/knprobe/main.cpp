// knprobe — command-line front end (thin: parses, calls the library, prints). One file per
// subcommand beside this one; shared option groups and helpers in cli.hpp / cli.cpp.
//   knprobe localize --model M [--tokenizer T] --facts F.jsonl --langs en,zh --out DIR
//   knprobe dkn      --model M [--tokenizer T] --facts F.jsonl --langs en,zh --out DIR
//   knprobe edit     --model M [--tokenizer T] --facts F.jsonl --langs en,zh --out DIR
//   knprobe factcheck --model M [--tokenizer T] --mlama DIR --langs en,zh --out DIR
//   knprobe run      --model M [--tokenizer T] --mlama DIR --langs en,zh --out results.jsonl
//                    (resumable; under mpirun the facts are sharded over the ranks)
//   knprobe report   results.jsonl... [--factcheck factcheck.json] --out report.html
//   knprobe predict  --model M [--tokenizer T] --prompt "The capital of France is" [--top 5]
// M: a .gguf file (Llama 2 / 3, Mistral, SmolLM, Qwen 2 / 3, Gemma 3), a llama2.c .bin checkpoint,
// or a Hugging Face gpt2 / bert / Llama-family directory (config.json + safetensors + tokenizer
// files).
// Exit codes: 0 done, 1 bad input or I/O failure, 2 bad usage (an option), 3 internal error,
// 130 interrupted (SIGINT / SIGTERM; a second signal stops at once with 128 + signal).
#include <csignal>
#include <cstdio>
#include <new>

#include "cli.hpp"
#include "knprobe/version.hpp"
#ifdef KNPROBE_HAS_MPI
#include <mpi.h>
#endif

using namespace knprobe;
using namespace knprobe::cli;

namespace {

extern "C" void on_stop_signal(int sig) {
  if (g_stop.exchange(true)) std::_Exit(128 + sig);  // a second signal: stop at once
}

/// The rank and size of MPI_COMM_WORLD when started by mpirun (MPI initialised here), else {0, 1}.
std::pair<int, int> mpi_start(int& argc, char**& argv) {
#ifdef KNPROBE_HAS_MPI
  const bool launched =
      std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_RANK");
  if (launched && argc > 1 && std::string_view(argv[1]) == "run") {
    int provided = 0, rank = 0, size = 1;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return {rank, size};
  }
#else
  (void)argc;
  (void)argv;
#endif
  return {0, 1};
}

void mpi_finish() {
#ifdef KNPROBE_HAS_MPI
  int init = 0, done = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&done);
  if (init && !done) MPI_Finalize();
#endif
}

/// Stops every rank (an error on one rank would leave the others waiting at a barrier).
void mpi_abort([[maybe_unused]] int size, [[maybe_unused]] int rc) {
#ifdef KNPROBE_HAS_MPI
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, rc);
#endif
  mpi_finish();
}

int report_error(const char* kind, const std::string& what, int rc, int size) {
  std::fprintf(stderr, "knprobe: %s: %s\n", kind, what.c_str());
  mpi_abort(size, rc);
  return rc;
}

/// Runs the chosen subcommand and maps what it throws to the documented exit codes.
int dispatch(const std::vector<Command>& commands, int size) {
  try {
    for (const auto& c : commands)
      if (c.app->parsed()) {
        const int rc = c.run();
        mpi_finish();
        return rc;
      }
    return k_usage;
  } catch (const UsageError& e) {
    return report_error("usage error", e.what(), k_usage, size);
  } catch (const Interrupted& e) {
    return report_error("interrupted", e.what(), k_interrupted, size);
  } catch (const Error& e) {
    return report_error("error", e.what(), k_bad_input, size);
  } catch (const std::filesystem::filesystem_error& e) {
    return report_error("error", e.what(), k_bad_input, size);
  } catch (const nlohmann::json::exception& e) {
    return report_error("error",
                        "an input file has a JSON value of an unexpected type or shape (" +
                            io::detail::json_message(e) + ")",
                        k_bad_input, size);
  } catch (const std::bad_alloc&) {
    return report_error("error", "out of memory (the input asks for more than this machine has)",
                        k_bad_input, size);
  } catch (const std::exception& e) {
    return report_error("internal error (please report)", e.what(), k_internal, size);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"knprobe " KNPROBE_VERSION_STRING
               ": find, test and edit the neurons that store facts"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 done, 1 bad input or I/O failure, 2 bad usage, 3 internal error, "
      "130 interrupted.");
  const auto [rank, size] = mpi_start(argc, argv);
  const std::vector<Command> commands{
      add_localize(app),        add_dkn(app),    add_edit(app),   add_factcheck(app),
      add_run(app, rank, size), add_report(app), add_predict(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help / the message
    mpi_finish();
    return rc == 0 ? k_ok : k_usage;
  }
  // Only `run` stops at a safe point (it polls g_stop between items and exits 130); every other
  // command keeps the default action, so Ctrl-C or SIGTERM ends it at once (the shell reports
  // 130 / 143; outputs are written atomically, so none is left half-written).
  if (app.got_subcommand("run")) {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
  }
  int rc = dispatch(commands, size);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "knprobe: error: cannot write to standard output\n");
    if (rc == k_ok) rc = k_bad_input;
  }
  return rc;
}
