#pragma once
// Eigen for the whole library, included through this one header.
//
// GCC before 13 (GCC bug 105593) warns "'__Y' may be used uninitialized" inside its own AVX /
// AVX-512 intrinsics headers (`__m256d __Y = __Y;` in `_mm256_undefined_pd`) whenever those
// intrinsics are inlined into Eigen's AVX-512 kernels, i.e. on every -march with AVX-512. The
// warning's location is the intrinsics header, so ignoring the two warnings for the region in
// which those headers are first included silences exactly these false positives: the same
// warnings in knprobe's own code (or a user's) are still reported.

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define KNPROBE_DETAIL_GCC_PR105593 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#endif

#include <Eigen/Core>

#ifdef KNPROBE_DETAIL_GCC_PR105593
#pragma GCC diagnostic pop
#undef KNPROBE_DETAIL_GCC_PR105593
#endif
