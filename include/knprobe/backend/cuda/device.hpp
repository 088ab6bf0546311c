#pragma once
// Host-side interface of the CUDA part (target knprobe::cuda, macro KNPROBE_HAS_CUDA). Plain C++
// types only, so this header is usable from .cpp files compiled without nvcc.

#include <string>
#include <vector>

#include "knprobe/core/error.hpp"

namespace knprobe::cuda {

/// A CUDA runtime or cuBLAS call failed; the message names the call.
class CudaError : public Error {
 public:
  using Error::Error;
};

/// Number of usable CUDA devices; 0 when there is no driver or no device (never throws).
int device_count() noexcept;

/// The device's marketing name (e.g. "NVIDIA H100 80GB HBM3").
std::string device_name(int device);

/// C = A B on the current device with cuBLAS, all row-major: A [m × k], B [k × n] → C [m × n].
std::vector<float> sgemm_row_major(const std::vector<float>& a, const std::vector<float>& b, int m,
                                   int k, int n);

}  // namespace knprobe::cuda
