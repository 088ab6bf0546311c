#pragma once
// OpenMP helpers that compile to nothing without OpenMP (no unknown-pragma warnings).

#if defined(_OPENMP)
#include <omp.h>
#define KNPROBE_PRAGMA(x) _Pragma(#x)
/// `#pragma omp parallel for` when the loop has enough work.
#define KNPROBE_PARALLEL_FOR_IF(cond) KNPROBE_PRAGMA(omp parallel for schedule(static) if (cond))
/// A parallel region (`#pragma omp parallel if (cond)`) and, inside it, a statically scheduled
/// work-sharing loop: the same iterations go to the same thread on every run.
#define KNPROBE_PARALLEL_IF(cond) KNPROBE_PRAGMA(omp parallel if (cond))
#define KNPROBE_FOR_STATIC KNPROBE_PRAGMA(omp for schedule(static))
#else
#define KNPROBE_PARALLEL_FOR_IF(cond)
#define KNPROBE_PARALLEL_IF(cond)
#define KNPROBE_FOR_STATIC
#endif

namespace knprobe::detail {

/// Threads a parallel region would use (1 without OpenMP).
inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Threads of the enclosing parallel region (1 outside one or without OpenMP).
inline int team_size() {
#if defined(_OPENMP)
  return omp_get_num_threads();
#else
  return 1;
#endif
}

/// This thread's number inside a parallel region (0 outside one or without OpenMP).
inline int thread_num() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace knprobe::detail
