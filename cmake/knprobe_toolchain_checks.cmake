# Checks that turn an unsupported compiler, -march or CPU into one clear CMake message instead of
# a wall of template errors or an "Illegal instruction" at run time. Included by the top-level
# CMakeLists.txt; reads KNPROBE_MARCH and KNPROBE_COMPILE_ONLY.
include(CheckCXXCompilerFlag)
include(CheckCXXSourceCompiles)

# 1. The compiler: C++20 concepts, <span>, <bit> and defaulted <=> as GCC 11 / Clang 14 have them
#    (Debian 12 ships GCC 12 and Clang 14).
set(knprobe_min_gcc 11)
set(knprobe_min_clang 14)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS knprobe_min_gcc)
  message(FATAL_ERROR "knprobe needs GCC >= ${knprobe_min_gcc} (C++20 concepts, <span>); "
                      "found GCC ${CMAKE_CXX_COMPILER_VERSION} at ${CMAKE_CXX_COMPILER}. "
                      "Install g++-12 (Debian 12: build-essential) or set CXX=clang++.")
elseif(CMAKE_CXX_COMPILER_ID STREQUAL "Clang" AND
       CMAKE_CXX_COMPILER_VERSION VERSION_LESS knprobe_min_clang)
  message(FATAL_ERROR "knprobe needs Clang >= ${knprobe_min_clang} (C++20 concepts, <span>); "
                      "found Clang ${CMAKE_CXX_COMPILER_VERSION} at ${CMAKE_CXX_COMPILER}.")
elseif(NOT CMAKE_CXX_COMPILER_ID MATCHES "^(GNU|Clang|AppleClang|IntelLLVM)$")
  message(WARNING "knprobe is tested with GCC >= ${knprobe_min_gcc} and Clang >= "
                  "${knprobe_min_clang}; ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION} "
                  "is not, expect to fix things")
endif()
set(CMAKE_REQUIRED_FLAGS "-std=c++20")
check_cxx_source_compiles([=[
  #include <bit>
  #include <compare>
  #include <concepts>
  #include <span>
  template <class T> concept Sized = requires(const T& t) { { t.size() } -> std::convertible_to<std::size_t>; };
  struct P { int a = 0; friend auto operator<=>(const P&, const P&) = default; };
  template <Sized S> std::size_t n(const S& s) { return s.size(); }
  int main() { int x[3] = {}; return static_cast<int>(n(std::span<int>(x))) - 3 + (P{} < P{}); }
]=] KNPROBE_HAVE_CXX20)
unset(CMAKE_REQUIRED_FLAGS)
if(NOT KNPROBE_HAVE_CXX20)
  message(FATAL_ERROR "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION} cannot compile the "
                      "C++20 knprobe uses (concepts, <span>, <bit>, operator<=>) with -std=c++20; "
                      "see CMakeFiles/CMakeError.log")
endif()

# 2. -march for our own targets: the compiler must accept it and, unless KNPROBE_COMPILE_ONLY, this
#    CPU must run what it produces (every ISA extension the flag enables must be present).
if(KNPROBE_MARCH)
  string(MAKE_C_IDENTIFIER "KNPROBE_MARCH_OK_${KNPROBE_MARCH}" knprobe_march_var)
  check_cxx_compiler_flag("-march=${KNPROBE_MARCH}" ${knprobe_march_var})
  if(NOT ${knprobe_march_var})
    message(FATAL_ERROR "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION} does not accept "
                        "-march=${KNPROBE_MARCH} (KNPROBE_MARCH). Use -DKNPROBE_MARCH=native, a "
                        "level it knows (x86-64-v2 needs GCC >= 11 / Clang >= 12) or "
                        "-DKNPROBE_MARCH= for the compiler's default.")
  endif()
  if(NOT KNPROBE_MARCH STREQUAL "native" AND NOT KNPROBE_COMPILE_ONLY AND NOT CMAKE_CROSSCOMPILING
     AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$")
    set(knprobe_cpu_src ${CMAKE_BINARY_DIR}/CMakeFiles/knprobe_cpu_check.cpp)
    file(WRITE ${knprobe_cpu_src} [=[
#include <cstdio>
int main() {
  int missing = 0;
  __builtin_cpu_init();
#define KNPROBE_NEED(feature) \
  if (!__builtin_cpu_supports(feature)) { std::printf("%s ", feature); ++missing; }
#ifdef __SSE4_2__
  KNPROBE_NEED("sse4.2")
#endif
#ifdef __POPCNT__
  KNPROBE_NEED("popcnt")
#endif
#ifdef __AVX__
  KNPROBE_NEED("avx")
#endif
#ifdef __AVX2__
  KNPROBE_NEED("avx2")
#endif
#ifdef __FMA__
  KNPROBE_NEED("fma")
#endif
#ifdef __AVX512F__
  KNPROBE_NEED("avx512f")
#endif
#ifdef __AVX512BW__
  KNPROBE_NEED("avx512bw")
#endif
#ifdef __AVX512DQ__
  KNPROBE_NEED("avx512dq")
#endif
#ifdef __AVX512VL__
  KNPROBE_NEED("avx512vl")
#endif
#ifdef __AVX512VBMI__
  KNPROBE_NEED("avx512vbmi")
#endif
#ifdef __AVX512VNNI__
  KNPROBE_NEED("avx512vnni")
#endif
#ifdef __AVX512BF16__
  KNPROBE_NEED("avx512bf16")
#endif
#if defined(__AVX512FP16__) && !defined(__clang__)
  KNPROBE_NEED("avx512fp16")
#endif
  return missing;
}
]=])
    try_run(knprobe_cpu_run knprobe_cpu_compiled ${CMAKE_BINARY_DIR}/knprobe_cpu_check
            ${knprobe_cpu_src} COMPILE_DEFINITIONS "-march=${KNPROBE_MARCH}"
            RUN_OUTPUT_VARIABLE knprobe_cpu_missing)
    if(knprobe_cpu_compiled AND NOT knprobe_cpu_run EQUAL 0)
      string(STRIP "${knprobe_cpu_missing}" knprobe_cpu_missing)
      message(FATAL_ERROR "This CPU cannot run code built with -march=${KNPROBE_MARCH} "
                          "(KNPROBE_MARCH): it lacks ${knprobe_cpu_missing}. Use "
                          "-DKNPROBE_MARCH=native, or -DKNPROBE_COMPILE_ONLY=ON to only compile.")
    endif()
  endif()
endif()
