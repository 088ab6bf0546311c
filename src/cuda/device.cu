// The CUDA part's first piece: device discovery and a cuBLAS smoke operation. The real backend
// (device-resident models) builds on this. No Eigen or xtensor here: raw pointers and sizes only.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "knprobe/backend/cuda/device.hpp"

namespace knprobe::cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess)
    throw CudaError("cudaGetDeviceProperties failed for device " + std::to_string(device));
  return prop.name;
}

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw CudaError(std::string(what) + ": " + cudaGetErrorString(e));
}
void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}
}  // namespace

std::vector<float> sgemm_row_major(const std::vector<float>& a, const std::vector<float>& b, int m,
                                   int k, int n) {
  if (m <= 0 || k <= 0 || n <= 0 || a.size() != std::size_t(m) * k ||
      b.size() != std::size_t(k) * n)
    throw CudaError("sgemm_row_major: a must be m*k and b k*n with m, k, n > 0");
  float *da = nullptr, *db = nullptr, *dc = nullptr;
  std::vector<float> c(std::size_t(m) * n);
  cublasHandle_t handle = nullptr;
  try {
    check(cudaMalloc(&da, a.size() * sizeof(float)), "cudaMalloc a");
    check(cudaMalloc(&db, b.size() * sizeof(float)), "cudaMalloc b");
    check(cudaMalloc(&dc, c.size() * sizeof(float)), "cudaMalloc c");
    check(cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice), "copy a");
    check(cudaMemcpy(db, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice), "copy b");
    check(cublasCreate(&handle), "cublasCreate");
    const float one = 1.0f, zero = 0.0f;
    // Row-major C = A B is column-major Cᵀ = Bᵀ Aᵀ.
    check(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, db, n, da, k, &zero, dc, n),
          "cublasSgemm");
    check(cudaMemcpy(c.data(), dc, c.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy c");
  } catch (...) {
    if (handle) cublasDestroy(handle);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    throw;
  }
  cublasDestroy(handle);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  return c;
}

}  // namespace knprobe::cuda
