#pragma once
// OpenMP helpers that compile to nothing without OpenMP (no unknown-pragma warnings).

#if defined(_OPENMP)
#include <omp.h>
#define KNPROBE_PRAGMA(x) _Pragma(#x)
/// `#pragma omp parallel for` when the loop has enough work.
#define KNPROBE_PARALLEL_FOR_IF(cond) KNPROBE_PRAGMA(omp parallel for schedule(static) if (cond))
#else
#define KNPROBE_PARALLEL_FOR_IF(cond)
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

}  // namespace knprobe::detail
