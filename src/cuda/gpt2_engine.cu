// GPT-2 on one GPU: the device side of knprobe::cuda::CudaGpt2Model. Rows are positions (of one
// prompt, or of several patterns / quadrature points), matrices row-major as on the CPU. The
// maths follows include/knprobe/model/gpt2.hpp line by line; see that file for the equations.
// No Eigen or xtensor here: raw pointers and sizes only.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "knprobe/backend/cuda/gpt2_engine.hpp"

namespace knprobe::cuda {

// ---------------------------------------------------------------------------------------------
// errors and memory

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw CudaError(std::string(what) + ": " + cudaGetErrorString(e));
  }
}
void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}

std::string gib(std::size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1024.0 * 1024 * 1024));
  return buf;
}

/// Device allocation owned by RAII; allocation failure names the requested size.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(std::size_t floats, const char* what) { allocate(floats * sizeof(float), what); }
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(o.bytes_) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~Buffer() {
    if (p_) cudaFreeAsync(p_, nullptr);
  }
  /// Stream-ordered allocation from the device's pool (kept, see retain_pool_memory), so the many
  /// short-lived buffers of a call cost no device synchronisation.
  void allocate(std::size_t bytes, const char* what) {
    if (p_) cudaFreeAsync(p_, nullptr);
    p_ = nullptr;
    bytes_ = bytes;
    if (bytes == 0) return;
    const cudaError_t e = cudaMallocAsync(&p_, bytes, nullptr);
    if (e != cudaSuccess) {
      cudaGetLastError();
      p_ = nullptr;
      std::size_t free = 0, total = 0;
      cudaMemGetInfo(&free, &total);
      throw CudaError(std::string("out of device memory: ") + what + " needs " + gib(bytes) + " (" +
                      std::to_string(bytes) + " bytes), the device has " + gib(free) + " free of " +
                      gib(total) + " (" + cudaGetErrorString(e) + ")");
    }
  }
  float* f() const { return static_cast<float*>(p_); }
  int* i() const { return static_cast<int*>(p_); }
  void* raw() const { return p_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

Buffer upload(const float* host, std::size_t n, const char* what) {
  Buffer b(n, what);
  check(cudaMemcpy(b.f(), host, n * sizeof(float), cudaMemcpyHostToDevice), what);
  return b;
}
Buffer upload_ints(const std::vector<int>& v, const char* what) {
  Buffer b;
  b.allocate(v.size() * sizeof(int), what);
  if (!v.empty())
    check(cudaMemcpy(b.i(), v.data(), v.size() * sizeof(int), cudaMemcpyHostToDevice), what);
  return b;
}

/// Memory freed into the device's default pool stays there for the next call.
void retain_pool_memory(int device) {
  cudaMemPool_t pool = nullptr;
  check(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool");
  std::uint64_t keep = ~std::uint64_t{0};
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep),
        "cudaMemPoolSetAttribute");
}

constexpr int k_threads = 256;
unsigned blocks_for(std::size_t n) {
  return static_cast<unsigned>((n + k_threads - 1) / k_threads);
}

// ---------------------------------------------------------------------------------------------
// kernels

/// Block-wide sum (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = 0;
  const int warps = blockDim.x >> 5;
  for (int w = 0; w < warps; ++w) t += scratch[w];
  return t;
}
__device__ float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = -INFINITY;
  const int warps = blockDim.x >> 5;
  for (int w = 0; w < warps; ++w) t = fmaxf(t, scratch[w]);
  return t;
}

/// h[t] = wte[tokens[t]] + wpe[t mod period] (rows of several prompts of `period` tokens).
__global__ void embed_kernel(const int* tokens, const float* wte, const float* wpe, int n, int d,
                             int period, float* h) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= std::size_t(n) * d) return;
  const int t = static_cast<int>(i / d), c = static_cast<int>(i % d);
  h[i] = wte[std::size_t(tokens[t]) * d + c] + wpe[std::size_t(t % period) * d + c];
}

/// out[i, u] += scale · Σ_b site[(b·n + positions[i]) · F + u] over b < count.
__global__ void mean_rows_kernel(const float* site, const int* positions, int npos, int count,
                                 int n, int F, float scale, float* out) {
  const std::size_t k = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (k >= std::size_t(npos) * F) return;
  const int i = static_cast<int>(k / F), u = static_cast<int>(k % F);
  float acc = 0;
  for (int b = 0; b < count; ++b) acc += site[(std::size_t(b) * n + positions[i]) * F + u];
  out[k] += scale * acc;
}

/// dst = bf16(src), round to nearest even.
__global__ void to_bf16_kernel(const float* src, __nv_bfloat16* dst, std::size_t n) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}

/// y = (x − μ) rstd ⊙ γ + β per row; keeps μ and rstd. One block per row.
__global__ void layer_norm_forward_kernel(const float* x, const float* g, const float* b, int d,
                                          float eps, float* y, float* mean, float* rstd) {
  __shared__ float scratch[32];
  const float* xr = x + std::size_t(blockIdx.x) * d;
  float s = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) s += xr[c];
  const float mu = block_sum(s, scratch) / d;
  float v = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) v += (xr[c] - mu) * (xr[c] - mu);
  const float r = rsqrtf(block_sum(v, scratch) / d + eps);
  float* yr = y + std::size_t(blockIdx.x) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) yr[c] = (xr[c] - mu) * r * g[c] + b[c];
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = mu;
    rstd[blockIdx.x] = r;
  }
}

/// dx = add + rstd (γ⊙dy − mean(γ⊙dy) − x̂ mean(γ⊙dy⊙x̂)), x̂ = (x − μ) rstd. `add` may be null
/// or alias dx.
__global__ void layer_norm_backward_kernel(const float* dy, const float* x, const float* g,
                                           const float* mean, const float* rstd, int d,
                                           const float* add, float* dx) {
  __shared__ float scratch[32];
  const std::size_t row = blockIdx.x;
  const float* dyr = dy + row * d;
  const float* xr = x + row * d;
  const float mu = mean[row], r = rstd[row];
  float s1 = 0, s2 = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    const float gd = g[c] * dyr[c];
    s1 += gd;
    s2 += gd * (xr[c] - mu) * r;
  }
  const float m1 = block_sum(s1, scratch) / d;
  const float m2 = block_sum(s2, scratch) / d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    const float xh = (xr[c] - mu) * r;
    const float v = r * (g[c] * dyr[c] - m1 - xh * m2);
    dx[row * d + c] = (add ? add[row * d + c] : 0.0f) + v;
  }
}

__device__ float gelu(float x, bool erf_form) {
  if (erf_form) return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}
__device__ float gelu_grad(float x, bool erf_form) {
  if (erf_form)
    return 0.5f * (1.0f + erff(x * 0.7071067811865476f)) +
           x * 0.3989422804014327f * expf(-0.5f * x * x);
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  const float t = tanhf(u);
  return 0.5f * (1.0f + t) +
         0.5f * x * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
}

/// y[r, c] += b[c] (+ resid[r, c]); rows × cols.
__global__ void bias_residual_kernel(float* y, const float* b, const float* resid, std::size_t rows,
                                     int cols) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  y[i] += b[i % cols] + (resid ? resid[i] : 0.0f);
}

/// pre[r, c] += b[c]; post = gelu(pre).
__global__ void bias_gelu_kernel(float* pre, const float* b, float* post, std::size_t rows,
                                 int cols, bool erf_form) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  const float z = pre[i] + b[i % cols];
  pre[i] = z;
  post[i] = gelu(z, erf_form);
}

/// post = gelu(pre).
__global__ void gelu_kernel(const float* pre, float* post, std::size_t n, bool erf_form) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) post[i] = gelu(pre[i], erf_form);
}

/// d_pre = d_post ⊙ gelu'(pre).
__global__ void gelu_backward_kernel(const float* d_post, const float* pre, float* d_pre,
                                     std::size_t n, bool erf_form) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) d_pre[i] = d_post[i] * gelu_grad(pre[i], erf_form);
}

/// dst[r] = src[index[r]] (rows of `cols` floats).
__global__ void gather_rows_kernel(const float* src, const int* index, int rows, int cols,
                                   float* dst) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= std::size_t(rows) * cols) return;
  const std::size_t r = i / cols, c = i % cols;
  dst[i] = src[std::size_t(index[r]) * cols + c];
}

/// Row r (position pos[r]) attends to keys 0..pos[r]: keys j < start[r] are the trace's cached
/// ones (kc / vc, [positions × d]), keys j ≥ start[r] are new rows first[r] + j − start[r] of
/// kn / vn. One block per (row, head); scores in dynamic shared memory. Probabilities go to
/// probs[(r·H + h)·max_kv + j] when `probs` is not null.
__global__ void attention_forward_kernel(const float* q, const float* kn, const float* vn,
                                         const float* kc, const float* vc, const int* pos,
                                         const int* start, const int* first, int d, int hd,
                                         int max_kv, float scale, float* o, float* probs) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  const int r = blockIdx.x, h = blockIdx.y, H = gridDim.y;
  const int p = pos[r], s0 = start[r], f0 = first[r];
  float* score = smem;        // [p + 1]
  float* qh = smem + max_kv;  // [hd]
  for (int c = threadIdx.x; c < hd; c += blockDim.x) qh[c] = q[std::size_t(r) * d + h * hd + c];
  __syncthreads();
  float local_max = -INFINITY;
  for (int j = threadIdx.x; j <= p; j += blockDim.x) {
    const float* kr = j < s0 ? kc + std::size_t(j) * d : kn + std::size_t(f0 + j - s0) * d;
    kr += h * hd;
    float acc = 0;
    for (int c = 0; c < hd; ++c) acc += qh[c] * kr[c];
    acc *= scale;
    score[j] = acc;
    local_max = fmaxf(local_max, acc);
  }
  const float m = block_max(local_max, scratch);
  float local_sum = 0;
  for (int j = threadIdx.x; j <= p; j += blockDim.x) {
    const float e = expf(score[j] - m);
    score[j] = e;
    local_sum += e;
  }
  const float inv = 1.0f / block_sum(local_sum, scratch);
  for (int j = threadIdx.x; j <= p; j += blockDim.x) {
    score[j] *= inv;
    if (probs) probs[(std::size_t(r) * H + h) * max_kv + j] = score[j];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < hd; c += blockDim.x) {
    float acc = 0;
    for (int j = 0; j <= p; ++j) {
      const float* vr = j < s0 ? vc + std::size_t(j) * d : vn + std::size_t(f0 + j - s0) * d;
      acc += score[j] * vr[h * hd + c];
    }
    o[std::size_t(r) * d + h * hd + c] = acc;
  }
}

/// Backward of attention_forward for rows whose only new key / value is their own (start = pos,
/// first = r): from d_o, gives dq and the gradients of the row's own key and value; the cached
/// keys / values are constants. With a_j the probabilities, da_j = d_o·v_j,
/// ds_j = a_j (da_j − Σ_i a_i da_i), dq = scale Σ_j ds_j k_j, dk_p = scale ds_p q, dv_p = a_p d_o.
__global__ void attention_backward_kernel(const float* d_o, const float* q, const float* kn,
                                          const float* vn, const float* kc, const float* vc,
                                          const int* pos, const float* probs, int d, int hd,
                                          int max_kv, float scale, float* dq, float* dk,
                                          float* dv) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  const int r = blockIdx.x, h = blockIdx.y, H = gridDim.y;
  const int p = pos[r];
  float* ds = smem;            // [p + 1]
  float* doh = smem + max_kv;  // [hd]
  const float* a = probs + (std::size_t(r) * H + h) * max_kv;
  for (int c = threadIdx.x; c < hd; c += blockDim.x) doh[c] = d_o[std::size_t(r) * d + h * hd + c];
  __syncthreads();
  float local = 0;
  for (int j = threadIdx.x; j <= p; j += blockDim.x) {
    const float* vr = (j < p ? vc + std::size_t(j) * d : vn + std::size_t(r) * d) + h * hd;
    float acc = 0;
    for (int c = 0; c < hd; ++c) acc += doh[c] * vr[c];
    ds[j] = acc;
    local += a[j] * acc;
  }
  const float total = block_sum(local, scratch);
  for (int j = threadIdx.x; j <= p; j += blockDim.x) ds[j] = a[j] * (ds[j] - total);
  __syncthreads();
  for (int c = threadIdx.x; c < hd; c += blockDim.x) {
    float acc = 0;
    for (int j = 0; j <= p; ++j) {
      const float* kr = j < p ? kc + std::size_t(j) * d : kn + std::size_t(r) * d;
      acc += ds[j] * kr[h * hd + c];
    }
    const std::size_t at = std::size_t(r) * d + h * hd + c;
    dq[at] = scale * acc;
    dk[at] = scale * ds[p] * q[at];
    dv[at] = a[p] * doh[c];
  }
}

/// Per row r of logits z [rows × V]: prob[r] = softmax(z_r)[target[r]]; with `grad`, z_r is
/// overwritten by dP/dz = P (e_t − softmax(z_r)). One block per row.
__global__ void softmax_target_kernel(float* z, const int* target, int V, bool grad, float* prob) {
  __shared__ float scratch[32];
  float* zr = z + std::size_t(blockIdx.x) * V;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, zr[j]);
  m = block_max(m, scratch);
  float s = 0;
  for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(zr[j] - m);
  s = block_sum(s, scratch);
  const int t = target[blockIdx.x];
  const float p = expf(zr[t] - m) / s;
  __syncthreads();
  if (grad)
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
      const float sj = expf(zr[j] - m) / s;
      zr[j] = p * ((j == t ? 1.0f : 0.0f) - sj);
    }
  if (threadIdx.x == 0) prob[blockIdx.x] = p;
}

/// Applies interventions in order (one thread: order matters when two touch one element).
/// site[row_of(i) · ffn + unit] with row_of = pattern · len + position − start, for layer == l.
__global__ void intervene_kernel(float* site, const DeviceIntervention* iv, int n, int layer,
                                 int len, int start, int ffn) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  for (int i = 0; i < n; ++i) {
    if (iv[i].layer != layer) continue;
    float& x =
        site[(std::size_t(iv[i].pattern) * len + (iv[i].position - start)) * ffn + iv[i].unit];
    x = iv[i].op == 0 ? iv[i].value : x * iv[i].value;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// public helpers

const char* precision_name(Precision p) noexcept {
  switch (p) {
    case Precision::tf32:
      return "tf32";
    case Precision::bf16:
      return "bf16";
    default:
      return "fp32";
  }
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "tf32") return Precision::tf32;
  if (name == "bf16") return Precision::bf16;
  throw ArgumentError("precision '" + name + "' unknown; use fp32, tf32 or bf16");
}

std::pair<std::size_t, std::size_t> memory_info(int device) {
  check(cudaSetDevice(device), "cudaSetDevice");
  std::size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return {free, total};
}

void probe_allocation(std::size_t bytes, int device) {
  check(cudaSetDevice(device), "cudaSetDevice");
  Buffer b;
  b.allocate(bytes, "probe_allocation");
}

// ---------------------------------------------------------------------------------------------
// the engine

class DeviceTrace {
 public:
  int n = 0;
  std::vector<Buffer> resid_mid, keys, values;  // [L] each [n × d]
  Buffer final_hidden;                          // [n × d]
};

struct LayerDevice {
  Buffer ln1_g, ln1_b, wq, wk, wv, wo, bq, bk, bv, bo, ln2_g, ln2_b, w_fc, w_proj, b_fc, b_proj;
};

/// Per-layer activations kept for backward (rows of the layer's active requests).
struct LayerCache {
  Buffer h_in, mean1, rstd1, q, k, v, probs, h_mid, mean2, rstd2, pre, post;
};

struct Gpt2Engine::Impl {
  Gpt2Shape s;
  int device = 0;
  Precision precision = Precision::fp32;
  cublasHandle_t blas = nullptr;
  Buffer wte, wpe, lnf_g, lnf_b;
  std::vector<LayerDevice> layers;
  std::size_t weight_bytes = 0;
  /// BF16 copies of weight matrices, made on first use in Precision::bf16, dropped on edits.
  std::unordered_map<const float*, Buffer> bf16_weights;
  /// Page-locked staging for host transfers (grown on demand).
  float* pinned = nullptr;
  std::size_t pinned_floats = 0;

  ~Impl() {
    if (blas) cublasDestroy(blas);
    if (pinned) cudaFreeHost(pinned);
  }

  float* staging(std::size_t floats) {
    if (floats > pinned_floats) {
      if (pinned) cudaFreeHost(pinned);
      pinned = nullptr;
      pinned_floats = 0;
      check(cudaMallocHost(reinterpret_cast<void**>(&pinned), floats * sizeof(float)),
            "cudaMallocHost (staging)");
      pinned_floats = floats;
    }
    return pinned;
  }
  /// Host → device through the staging buffer.
  void to_device(float* dst, const float* src, std::size_t n, const char* what) {
    float* st = staging(n);
    std::copy_n(src, n, st);
    check(cudaMemcpy(dst, st, n * sizeof(float), cudaMemcpyHostToDevice), what);
  }
  /// Device → host through the staging buffer.
  void to_host(float* dst, const float* src, std::size_t n, const char* what) {
    float* st = staging(n);
    check(cudaMemcpy(st, src, n * sizeof(float), cudaMemcpyDeviceToHost), what);
    std::copy_n(st, n, dst);
  }

  const void* bf16_of(const float* w, std::size_t n) {
    auto it = bf16_weights.find(w);
    if (it == bf16_weights.end()) {
      Buffer b;
      b.allocate(n * sizeof(__nv_bfloat16), "bf16 weights");
      to_bf16_kernel<<<blocks_for(n), k_threads>>>(w, static_cast<__nv_bfloat16*>(b.raw()), n);
      check(cudaGetLastError(), "to_bf16_kernel");
      it = bf16_weights.emplace(w, std::move(b)).first;
    }
    return it->second.raw();
  }
  Buffer bf16_copy(const float* x, std::size_t n) const {
    Buffer b;
    b.allocate(n * sizeof(__nv_bfloat16), "bf16 activations");
    to_bf16_kernel<<<blocks_for(n), k_threads>>>(x, static_cast<__nv_bfloat16*>(b.raw()), n);
    check(cudaGetLastError(), "to_bf16_kernel");
    return b;
  }

  int hd() const { return s.d_model / s.n_head; }
  float attn_scale() const { return 1.0f / std::sqrt(static_cast<float>(hd())); }

  /// One cuBLAS GEMM in the engine's precision. FP32 / TF32: FP32 operands, compute type 32F or
  /// 32F_FAST_TF32. BF16: the weight's BF16 copy and the activations rounded to BF16, FP32
  /// accumulation and output (cuBLAS's 32F_FAST_16BF on FP32 operands ran TF32 kernels on an H100
  /// — identical results — so the rounding is done here).
  void gemm(cublasOperation_t ta, int m, int n, int k, const float* w, int lda, const float* x,
            int ldb, float beta, float* y, int ldc, const char* what) {
    const float one = 1.0f;
    if (precision == Precision::bf16) {
      const void* wb = bf16_of(w, std::size_t(lda) * (ta == CUBLAS_OP_T ? m : k));
      const Buffer xb = bf16_copy(x, std::size_t(ldb) * n);
      check(cublasGemmEx(blas, ta, CUBLAS_OP_N, m, n, k, &one, wb, CUDA_R_16BF, lda, xb.raw(),
                         CUDA_R_16BF, ldb, &beta, y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            what);
      return;
    }
    const cublasComputeType_t ct =
        precision == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    check(cublasGemmEx(blas, ta, CUBLAS_OP_N, m, n, k, &one, w, CUDA_R_32F, lda, x, CUDA_R_32F, ldb,
                       &beta, y, CUDA_R_32F, ldc, ct, CUBLAS_GEMM_DEFAULT),
          what);
  }

  /// y [rows × out] = x [rows × in] Wᵀ (+ beta y), W [out × in] row-major.
  void gemm_xwt(const float* x, const float* w, int rows, int in, int out, float* y,
                float beta = 0.0f) {
    gemm(CUBLAS_OP_T, out, rows, in, w, in, x, in, beta, y, out, "cublasGemmEx (x Wᵀ)");
  }
  /// dx [rows × in] = dy [rows × out] W (+ beta dx), W [out × in] row-major.
  void gemm_xw(const float* dy, const float* w, int rows, int out, int in, float* dx,
               float beta = 0.0f) {
    gemm(CUBLAS_OP_N, in, rows, out, w, in, dy, out, beta, dx, in, "cublasGemmEx (dy W)");
  }

  void layer_norm(const float* x, const Buffer& g, const Buffer& b, int rows, float* y, float* mean,
                  float* rstd) const {
    if (rows == 0) return;
    layer_norm_forward_kernel<<<rows, k_threads>>>(x, g.f(), b.f(), s.d_model, s.eps, y, mean,
                                                   rstd);
    check(cudaGetLastError(), "layer_norm_forward_kernel");
  }
  void layer_norm_back(const float* dy, const float* x, const Buffer& g, const float* mean,
                       const float* rstd, int rows, const float* add, float* dx) const {
    if (rows == 0) return;
    layer_norm_backward_kernel<<<rows, k_threads>>>(dy, x, g.f(), mean, rstd, s.d_model, add, dx);
    check(cudaGetLastError(), "layer_norm_backward_kernel");
  }
  void bias_residual(float* y, const Buffer& b, const float* resid, int rows, int cols) const {
    if (rows == 0) return;
    const std::size_t n = std::size_t(rows) * cols;
    bias_residual_kernel<<<blocks_for(n), k_threads>>>(y, b.f(), resid, rows, cols);
    check(cudaGetLastError(), "bias_residual_kernel");
  }

  /// Attention block of layer l for `rows` rows: x (entering the layer) → h_mid; keeps the cache.
  /// Row r has position pos[r]; its keys j < start[r] come from the trace (kc / vc).
  void attention_forward(int l, int rows, const float* x, const int* pos, const int* start,
                         const int* first, int max_kv, const float* kc, const float* vc,
                         LayerCache& c, bool keep_probs, float* h_mid) {
    const auto& L = layers[static_cast<std::size_t>(l)];
    const int d = s.d_model;
    const std::size_t rd = std::size_t(rows) * d;
    c.mean1 = Buffer(rows, "layer norm mean");
    c.rstd1 = Buffer(rows, "layer norm rstd");
    Buffer a(rd, "attention input");
    layer_norm(x, L.ln1_g, L.ln1_b, rows, a.f(), c.mean1.f(), c.rstd1.f());
    c.q = Buffer(rd, "queries");
    c.k = Buffer(rd, "keys");
    c.v = Buffer(rd, "values");
    gemm_xwt(a.f(), L.wq.f(), rows, d, d, c.q.f());
    gemm_xwt(a.f(), L.wk.f(), rows, d, d, c.k.f());
    gemm_xwt(a.f(), L.wv.f(), rows, d, d, c.v.f());
    bias_residual(c.q.f(), L.bq, nullptr, rows, d);
    bias_residual(c.k.f(), L.bk, nullptr, rows, d);
    bias_residual(c.v.f(), L.bv, nullptr, rows, d);
    if (keep_probs) c.probs = Buffer(std::size_t(rows) * s.n_head * max_kv, "attention weights");
    Buffer o(rd, "attention output");
    const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(s.n_head));
    const std::size_t smem = (std::size_t(max_kv) + hd()) * sizeof(float);
    attention_forward_kernel<<<grid, 128, smem>>>(c.q.f(), c.k.f(), c.v.f(), kc, vc, pos, start,
                                                  first, d, hd(), max_kv, attn_scale(), o.f(),
                                                  keep_probs ? c.probs.f() : nullptr);
    check(cudaGetLastError(), "attention_forward_kernel");
    gemm_xwt(o.f(), L.wo.f(), rows, d, d, h_mid);
    bias_residual(h_mid, L.bo, x, rows, d);
  }

  /// h_mid → pre (z) and post (gelu z) of layer l; keeps LN₂ statistics in the cache.
  void ffn_pre(int l, int rows, const float* h_mid, LayerCache& c, float* pre, float* post) {
    if (rows == 0) return;
    const auto& L = layers[static_cast<std::size_t>(l)];
    const int d = s.d_model;
    c.mean2 = Buffer(rows, "layer norm mean");
    c.rstd2 = Buffer(rows, "layer norm rstd");
    Buffer f(std::size_t(rows) * d, "ffn input");
    layer_norm(h_mid, L.ln2_g, L.ln2_b, rows, f.f(), c.mean2.f(), c.rstd2.f());
    gemm_xwt(f.f(), L.w_fc.f(), rows, d, s.ffn, pre);
    const std::size_t n = std::size_t(rows) * s.ffn;
    bias_gelu_kernel<<<blocks_for(n), k_threads>>>(pre, L.b_fc.f(), post, rows, s.ffn, s.gelu_erf);
    check(cudaGetLastError(), "bias_gelu_kernel");
  }

  /// h = h_mid + post W_projᵀ + b_proj.
  void ffn_post(int l, int rows, const float* post, const float* h_mid, float* h) {
    if (rows == 0) return;
    const auto& L = layers[static_cast<std::size_t>(l)];
    gemm_xwt(post, L.w_proj.f(), rows, s.ffn, s.d_model, h);
    bias_residual(h, L.b_proj, h_mid, rows, s.d_model);
  }

  void gelu_forward(const float* pre, float* post, std::size_t n) const {
    if (n == 0) return;
    gelu_kernel<<<blocks_for(n), k_threads>>>(pre, post, n, s.gelu_erf);
    check(cudaGetLastError(), "gelu_kernel");
  }
  void gelu_backward(const float* d_post, const float* pre, float* d_pre, std::size_t n) const {
    if (n == 0) return;
    gelu_backward_kernel<<<blocks_for(n), k_threads>>>(d_post, pre, d_pre, n, s.gelu_erf);
    check(cudaGetLastError(), "gelu_backward_kernel");
  }
  void gather(const float* src, const Buffer& index, int rows, int cols, float* dst) const {
    if (rows == 0) return;
    gather_rows_kernel<<<blocks_for(std::size_t(rows) * cols), k_threads>>>(src, index.i(), rows,
                                                                            cols, dst);
    check(cudaGetLastError(), "gather_rows_kernel");
  }
  void softmax_target(float* z, const Buffer& target, int rows, bool grad, float* prob) const {
    if (rows == 0) return;
    softmax_target_kernel<<<rows, 1024>>>(z, target.i(), s.vocab, grad, prob);
    check(cudaGetLastError(), "softmax_target_kernel");
  }
};

Gpt2Engine::Gpt2Engine(const Gpt2Shape& shape, const Gpt2HostWeights& w, int device)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.s = shape;
  m.device = device;
  if (shape.n_layer <= 0 || shape.n_head <= 0 || shape.d_model <= 0 || shape.ffn <= 0 ||
      shape.vocab <= 0 || shape.n_positions <= 0 || shape.d_model % shape.n_head != 0)
    throw ArgumentError("cuda gpt2: invalid shape (n_layer " + std::to_string(shape.n_layer) +
                        ", n_head " + std::to_string(shape.n_head) + ", d_model " +
                        std::to_string(shape.d_model) + ")");
  if (static_cast<int>(w.layers.size()) != shape.n_layer)
    throw ArgumentError("cuda gpt2: " + std::to_string(w.layers.size()) +
                        " layers of weights for " + std::to_string(shape.n_layer) + " layers");
  if (device_count() <= device)
    throw CudaError("cuda gpt2: no CUDA device " + std::to_string(device) + " (" +
                    std::to_string(device_count()) + " found)");
  const std::size_t d = shape.d_model, f = shape.ffn;
  const std::size_t per_layer = 4 * d * d + 2 * d * f + 9 * d + f;
  const std::size_t floats = std::size_t(shape.vocab) * d + std::size_t(shape.n_positions) * d +
                             2 * d + per_layer * shape.n_layer;
  m.weight_bytes = floats * sizeof(float);
  const auto [free, total] = memory_info(device);
  // Margin for the working memory of a batched gradient call (logits of up to 2048 rows).
  const std::size_t margin = std::size_t(2048) * shape.vocab * sizeof(float) + (512u << 20);
  if (m.weight_bytes + margin > free)
    throw CudaError("cuda gpt2: the model needs " + gib(m.weight_bytes) + " of weights plus " +
                    gib(margin) + " working memory, but " + cuda::device_name(device) + " has " +
                    gib(free) + " free of " + gib(total) + "; use the CPU backend");
  check(cudaSetDevice(device), "cudaSetDevice");
  retain_pool_memory(device);
  check(cublasCreate(&m.blas), "cublasCreate");
  check(cublasSetMathMode(m.blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  m.wte = upload(w.wte, std::size_t(shape.vocab) * d, "wte");
  m.wpe = upload(w.wpe, std::size_t(shape.n_positions) * d, "wpe");
  m.lnf_g = upload(w.lnf_g, d, "ln_f.weight");
  m.lnf_b = upload(w.lnf_b, d, "ln_f.bias");
  for (const auto& l : w.layers) {
    LayerDevice x;
    x.ln1_g = upload(l.ln1_g, d, "ln_1.weight");
    x.ln1_b = upload(l.ln1_b, d, "ln_1.bias");
    x.wq = upload(l.wq, d * d, "wq");
    x.wk = upload(l.wk, d * d, "wk");
    x.wv = upload(l.wv, d * d, "wv");
    x.wo = upload(l.wo, d * d, "wo");
    x.bq = upload(l.bq, d, "bq");
    x.bk = upload(l.bk, d, "bk");
    x.bv = upload(l.bv, d, "bv");
    x.bo = upload(l.bo, d, "bo");
    x.ln2_g = upload(l.ln2_g, d, "ln_2.weight");
    x.ln2_b = upload(l.ln2_b, d, "ln_2.bias");
    x.w_fc = upload(l.w_fc, f * d, "mlp.c_fc.weight");
    x.w_proj = upload(l.w_proj, d * f, "mlp.c_proj.weight");
    x.b_fc = upload(l.b_fc, f, "mlp.c_fc.bias");
    x.b_proj = upload(l.b_proj, d, "mlp.c_proj.bias");
    m.layers.push_back(std::move(x));
  }
}

Gpt2Engine::~Gpt2Engine() = default;
Gpt2Engine::Gpt2Engine(Gpt2Engine&&) noexcept = default;
Gpt2Engine& Gpt2Engine::operator=(Gpt2Engine&&) noexcept = default;

const Gpt2Shape& Gpt2Engine::shape() const {
  return impl_->s;
}
void Gpt2Engine::set_precision(Precision p) {
  impl_->precision = p;
}
Precision Gpt2Engine::precision() const {
  return impl_->precision;
}
std::size_t Gpt2Engine::weight_bytes() const {
  return impl_->weight_bytes;
}
std::string Gpt2Engine::device_name() const {
  return cuda::device_name(impl_->device);
}

std::shared_ptr<const DeviceTrace> Gpt2Engine::trace(const std::int32_t* token_ptr, int n,
                                                     float* acts) {
  auto& m = *impl_;
  check(cudaSetDevice(m.device), "cudaSetDevice");
  const std::vector<int> tokens(token_ptr, token_ptr + std::max(n, 0));
  if (n == 0) throw ArgumentError("cuda gpt2: empty token sequence");
  if (n > m.s.n_positions)
    throw ArgumentError("cuda gpt2: " + std::to_string(n) +
                        " tokens exceed n_positions = " + std::to_string(m.s.n_positions));
  for (auto t : tokens)
    if (t < 0 || t >= m.s.vocab)
      throw ArgumentError("cuda gpt2: token id " + std::to_string(t) +
                          " outside the vocabulary [0, " + std::to_string(m.s.vocab) + ")");
  const int d = m.s.d_model, F = m.s.ffn;
  auto tr = std::make_shared<DeviceTrace>();
  tr->n = n;
  const std::size_t nd = std::size_t(n) * d, nf = std::size_t(n) * F;
  const Buffer tok = upload_ints(tokens, "tokens");
  std::vector<int> pos(static_cast<std::size_t>(n)), zero(static_cast<std::size_t>(n), 0);
  std::iota(pos.begin(), pos.end(), 0);
  const Buffer dpos = upload_ints(pos, "positions"), dzero = upload_ints(zero, "positions");
  Buffer h(nd, "hidden states"), pre(nf, "ffn pre-activation"), post(nf, "ffn activation");
  Buffer all_acts(nf * m.s.n_layer, "neuron activations");
  embed_kernel<<<blocks_for(nd), k_threads>>>(tok.i(), m.wte.f(), m.wpe.f(), n, d, n, h.f());
  check(cudaGetLastError(), "embed_kernel");
  for (int l = 0; l < m.s.n_layer; ++l) {
    LayerCache c;
    Buffer mid(nd, "residual stream");
    m.attention_forward(l, n, h.f(), dpos.i(), dzero.i(), dzero.i(), n, nullptr, nullptr, c, false,
                        mid.f());
    m.ffn_pre(l, n, mid.f(), c, pre.f(), post.f());
    check(cudaMemcpyAsync(all_acts.f() + std::size_t(l) * nf,
                          m.s.site_pre_activation ? pre.f() : post.f(), nf * sizeof(float),
                          cudaMemcpyDeviceToDevice, nullptr),
          "copy activations");
    m.ffn_post(l, n, post.f(), mid.f(), h.f());
    tr->resid_mid.push_back(std::move(mid));
    tr->keys.push_back(std::move(c.k));
    tr->values.push_back(std::move(c.v));
  }
  tr->final_hidden = Buffer(nd, "final hidden states");
  Buffer mean(n, "layer norm mean"), rstd(n, "layer norm rstd");
  m.layer_norm(h.f(), m.lnf_g, m.lnf_b, n, tr->final_hidden.f(), mean.f(), rstd.f());
  m.to_host(acts, all_acts.f(), nf * m.s.n_layer, "copy activations");
  return tr;
}

void Gpt2Engine::logits(const DeviceTrace& t, float* out) {
  auto& m = *impl_;
  check(cudaSetDevice(m.device), "cudaSetDevice");
  Buffer z(std::size_t(t.n) * m.s.vocab, "logits");
  m.gemm_xwt(t.final_hidden.f(), m.wte.f(), t.n, m.s.d_model, m.s.vocab, z.f());
  check(cudaMemcpy(out, z.f(), z.bytes(), cudaMemcpyDeviceToHost), "copy logits");
}

void Gpt2Engine::layer_gradients(const DeviceTrace& t, const GradientRequest* req_ptr, int count) {
  auto& m = *impl_;
  const std::vector<GradientRequest> reqs(req_ptr, req_ptr + std::max(count, 0));
  check(cudaSetDevice(m.device), "cudaSetDevice");
  if (reqs.empty()) return;
  const int L = m.s.n_layer, d = m.s.d_model, F = m.s.ffn;
  for (const auto& q : reqs) {
    if (q.layer < 0 || q.layer >= L)
      throw ArgumentError("layer " + std::to_string(q.layer) + " outside [0, " + std::to_string(L) +
                          ")");
    if (q.position < 0 || q.position >= t.n)
      throw ArgumentError("position " + std::to_string(q.position) + " outside [0, " +
                          std::to_string(t.n) + ")");
    if (q.target < 0 || q.target >= m.s.vocab)
      throw ArgumentError("token id " + std::to_string(q.target) + " outside the vocabulary [0, " +
                          std::to_string(m.s.vocab) + ")");
    if (q.rows <= 0) throw ArgumentError("layer_gradients: no points");
  }
  // Rows ordered by request layer: the rows active at layer l are then a prefix.
  std::vector<std::size_t> order(reqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return reqs[a].layer < reqs[b].layer; });
  std::vector<int> row_begin(reqs.size()), upto(static_cast<std::size_t>(L), 0);
  std::vector<int> pos, target, row_index;
  int total = 0;
  for (std::size_t i : order) {
    row_begin[i] = total;
    for (int b = 0; b < reqs[i].rows; ++b) {
      pos.push_back(reqs[i].position);
      target.push_back(reqs[i].target);
    }
    total += reqs[i].rows;
    for (int l = reqs[i].layer; l < L; ++l) upto[static_cast<std::size_t>(l)] = total;
  }
  auto before = [&](int l) { return l == 0 ? 0 : upto[static_cast<std::size_t>(l - 1)]; };
  const int l_min = reqs[order.front()].layer;
  int max_kv = 0;
  for (int p : pos) max_kv = std::max(max_kv, p + 1);
  const Buffer dpos = upload_ints(pos, "positions"), dtarget = upload_ints(target, "targets");
  const std::vector<int> rows_seq = [&] {
    std::vector<int> v(static_cast<std::size_t>(total));
    std::iota(v.begin(), v.end(), 0);
    return v;
  }();
  const Buffer dfirst = upload_ints(rows_seq, "row indices");
  // Gradients of every row at its own site, downloaded once at the end.
  Buffer grads(std::size_t(total) * F, "site gradients");
  std::vector<LayerCache> cache(static_cast<std::size_t>(L));
  Buffer h(std::size_t(total) * d, "hidden states");

  // Forward, layer by layer over the rows active there.
  for (int l = l_min; l < L; ++l) {
    LayerCache& c = cache[static_cast<std::size_t>(l)];
    const int nb = before(l), nu = upto[static_cast<std::size_t>(l)];
    c.h_mid = Buffer(std::size_t(nu) * d, "residual stream");
    c.pre = Buffer(std::size_t(nu) * F, "ffn pre-activation");
    c.post = Buffer(std::size_t(nu) * F, "ffn activation");
    if (nb > 0) {
      c.h_in = Buffer(std::size_t(nb) * d, "layer input");
      check(cudaMemcpy(c.h_in.f(), h.f(), std::size_t(nb) * d * sizeof(float),
                       cudaMemcpyDeviceToDevice),
            "copy layer input");
      m.attention_forward(l, nb, c.h_in.f(), dpos.i(), dpos.i(), dfirst.i(), max_kv,
                          t.keys[static_cast<std::size_t>(l)].f(),
                          t.values[static_cast<std::size_t>(l)].f(), c, true, c.h_mid.f());
      m.ffn_pre(l, nb, c.h_mid.f(), c, c.pre.f(), c.post.f());
    }
    // Requests of this layer join: h_mid from the trace, the site from their points.
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      if (reqs[i].layer != l) continue;
      const auto& q = reqs[i];
      const std::size_t r0 = static_cast<std::size_t>(row_begin[i]);
      const Buffer idx = upload_ints(std::vector<int>(static_cast<std::size_t>(q.rows), q.position),
                                     "row indices");
      m.gather(t.resid_mid[static_cast<std::size_t>(l)].f(), idx, q.rows, d, c.h_mid.f() + r0 * d);
      float* site = (m.s.site_pre_activation ? c.pre.f() : c.post.f()) + r0 * F;
      m.to_device(site, q.points, std::size_t(q.rows) * F, "copy points");
      if (m.s.site_pre_activation)
        m.gelu_forward(c.pre.f() + r0 * F, c.post.f() + r0 * F, std::size_t(q.rows) * F);
    }
    m.ffn_post(l, nu, c.post.f(), c.h_mid.f(), h.f());
  }

  // Head on every row: P and dP/dz, then back to dP/dh.
  Buffer x(std::size_t(total) * d, "final hidden"), mean(total, "mean"), rstd(total, "rstd");
  m.layer_norm(h.f(), m.lnf_g, m.lnf_b, total, x.f(), mean.f(), rstd.f());
  Buffer prob(total, "probabilities");
  {
    Buffer z(std::size_t(total) * m.s.vocab, "logits");
    m.gemm_xwt(x.f(), m.wte.f(), total, d, m.s.vocab, z.f());
    m.softmax_target(z.f(), dtarget, total, true, prob.f());
    m.gemm_xw(z.f(), m.wte.f(), total, m.s.vocab, d, x.f());
  }
  Buffer dh(std::size_t(total) * d, "hidden gradients");
  m.layer_norm_back(x.f(), h.f(), m.lnf_g, mean.f(), rstd.f(), total, nullptr, dh.f());

  // Backward, top layer down; rows of requests at layer l stop at the site.
  const auto hd = m.hd();
  for (int l = L - 1; l >= l_min; --l) {
    const auto& W = m.layers[static_cast<std::size_t>(l)];
    LayerCache& c = cache[static_cast<std::size_t>(l)];
    const int nb = before(l), nu = upto[static_cast<std::size_t>(l)];
    Buffer d_post(std::size_t(nu) * F, "ffn gradients");
    m.gemm_xw(dh.f(), W.w_proj.f(), nu, d, F, d_post.f());
    // Site gradients of the rows that joined here.
    const std::size_t fresh = std::size_t(nu - nb) * F;
    if (m.s.site_pre_activation)
      m.gelu_backward(d_post.f() + std::size_t(nb) * F, c.pre.f() + std::size_t(nb) * F,
                      grads.f() + std::size_t(nb) * F, fresh);
    else if (fresh > 0)
      check(cudaMemcpy(grads.f() + std::size_t(nb) * F, d_post.f() + std::size_t(nb) * F,
                       fresh * sizeof(float), cudaMemcpyDeviceToDevice),
            "copy site gradients");
    if (nb == 0) break;
    Buffer d_pre(std::size_t(nb) * F, "ffn gradients");
    m.gelu_backward(d_post.f(), c.pre.f(), d_pre.f(), std::size_t(nb) * F);
    Buffer df(std::size_t(nb) * d, "ffn input gradients");
    m.gemm_xw(d_pre.f(), W.w_fc.f(), nb, F, d, df.f());
    Buffer dmid(std::size_t(nb) * d, "residual gradients");
    m.layer_norm_back(df.f(), c.h_mid.f(), W.ln2_g, c.mean2.f(), c.rstd2.f(), nb, dh.f(), dmid.f());
    Buffer d_o(std::size_t(nb) * d, "attention gradients");
    m.gemm_xw(dmid.f(), W.wo.f(), nb, d, d, d_o.f());
    Buffer dq(std::size_t(nb) * d, "dq"), dk(std::size_t(nb) * d, "dk"),
        dv(std::size_t(nb) * d, "dv");
    const dim3 grid(static_cast<unsigned>(nb), static_cast<unsigned>(m.s.n_head));
    const std::size_t smem = (std::size_t(max_kv) + hd) * sizeof(float);
    attention_backward_kernel<<<grid, 128, smem>>>(
        d_o.f(), c.q.f(), c.k.f(), c.v.f(), t.keys[static_cast<std::size_t>(l)].f(),
        t.values[static_cast<std::size_t>(l)].f(), dpos.i(), c.probs.f(), d, hd, max_kv,
        m.attn_scale(), dq.f(), dk.f(), dv.f());
    check(cudaGetLastError(), "attention_backward_kernel");
    Buffer da(std::size_t(nb) * d, "attention input gradients");
    m.gemm_xw(dq.f(), W.wq.f(), nb, d, d, da.f());
    m.gemm_xw(dk.f(), W.wk.f(), nb, d, d, da.f(), 1.0f);
    m.gemm_xw(dv.f(), W.wv.f(), nb, d, d, da.f(), 1.0f);
    m.layer_norm_back(da.f(), c.h_in.f(), W.ln1_g, c.mean1.f(), c.rstd1.f(), nb, dmid.f(), dh.f());
    c = LayerCache{};
  }

  std::vector<float> p(static_cast<std::size_t>(total));
  check(cudaMemcpy(p.data(), prob.f(), p.size() * sizeof(float), cudaMemcpyDeviceToHost),
        "copy probabilities");
  float* st = m.staging(std::size_t(total) * F);
  check(cudaMemcpy(st, grads.f(), std::size_t(total) * F * sizeof(float), cudaMemcpyDeviceToHost),
        "copy gradients");
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const auto& q = reqs[i];
    const std::size_t r0 = static_cast<std::size_t>(row_begin[i]);
    std::copy_n(p.begin() + static_cast<std::ptrdiff_t>(r0), q.rows, q.probabilities);
    std::copy_n(st + r0 * F, std::size_t(q.rows) * F, q.gradients);
  }
}

void Gpt2Engine::probabilities(const DeviceTrace& t, int P,
                               const std::vector<DeviceIntervention>& ivs,
                               const std::vector<DeviceQuery>& queries, float* out) {
  auto& m = *impl_;
  check(cudaSetDevice(m.device), "cudaSetDevice");
  const int L = m.s.n_layer, d = m.s.d_model, F = m.s.ffn, Q = static_cast<int>(queries.size());
  int l0 = L, p0 = t.n;
  for (const auto& iv : ivs) {
    if (iv.pattern < 0 || iv.pattern >= P)
      throw ArgumentError("intervention of an unknown pattern");
    if (iv.layer < 0 || iv.layer >= L)
      throw ArgumentError("layer " + std::to_string(iv.layer) + " outside [0, " +
                          std::to_string(L) + ")");
    if (iv.position < 0 || iv.position >= t.n)
      throw ArgumentError("position " + std::to_string(iv.position) + " outside [0, " +
                          std::to_string(t.n) + ")");
    if (iv.unit < 0 || iv.unit >= F)
      throw ArgumentError("unit " + std::to_string(iv.unit) + " outside [0, " + std::to_string(F) +
                          ")");
    l0 = std::min(l0, iv.layer);
    p0 = std::min(p0, iv.position);
  }
  for (const auto& q : queries) {
    if (q.position < 0 || q.position >= t.n)
      throw ArgumentError("position " + std::to_string(q.position) + " outside [0, " +
                          std::to_string(t.n) + ")");
    if (q.target < 0 || q.target >= m.s.vocab)
      throw ArgumentError("token id " + std::to_string(q.target) + " outside the vocabulary [0, " +
                          std::to_string(m.s.vocab) + ")");
  }
  if (P == 0 || Q == 0) return;
  const int S = t.n - p0;
  const bool rerun = S > 0 && l0 < L;
  const int R = rerun ? P * S : 0;
  Buffer h(std::size_t(std::max(R, 1)) * d, "hidden states");
  Buffer x;
  if (rerun) {
    Buffer div;
    div.allocate(ivs.size() * sizeof(DeviceIntervention), "interventions");
    check(cudaMemcpy(div.raw(), ivs.data(), ivs.size() * sizeof(DeviceIntervention),
                     cudaMemcpyHostToDevice),
          "copy interventions");
    std::vector<int> pos, start(static_cast<std::size_t>(R), p0), first, idx;
    for (int b = 0; b < P; ++b)
      for (int i = 0; i < S; ++i) {
        pos.push_back(p0 + i);
        first.push_back(b * S);
        idx.push_back(p0 + i);
      }
    const Buffer dpos = upload_ints(pos, "positions"), dstart = upload_ints(start, "starts"),
                 dfirst = upload_ints(first, "row indices"), didx = upload_ints(idx, "rows");
    Buffer mid(std::size_t(R) * d, "residual stream"), pre(std::size_t(R) * F, "pre"),
        post(std::size_t(R) * F, "post");
    m.gather(t.resid_mid[static_cast<std::size_t>(l0)].f(), didx, R, d, mid.f());
    for (int l = l0; l < L; ++l) {
      LayerCache c;
      if (l > l0)
        m.attention_forward(l, R, h.f(), dpos.i(), dstart.i(), dfirst.i(), t.n,
                            t.keys[static_cast<std::size_t>(l)].f(),
                            t.values[static_cast<std::size_t>(l)].f(), c, false, mid.f());
      m.ffn_pre(l, R, mid.f(), c, pre.f(), post.f());
      float* site = m.s.site_pre_activation ? pre.f() : post.f();
      intervene_kernel<<<1, 1>>>(site, static_cast<const DeviceIntervention*>(div.raw()),
                                 static_cast<int>(ivs.size()), l, S, p0, F);
      check(cudaGetLastError(), "intervene_kernel");
      if (m.s.site_pre_activation) m.gelu_forward(pre.f(), post.f(), std::size_t(R) * F);
      m.ffn_post(l, R, post.f(), mid.f(), h.f());
    }
    x = Buffer(std::size_t(R) * d, "final hidden");
    Buffer mean(R, "mean"), rstd(R, "rstd");
    m.layer_norm(h.f(), m.lnf_g, m.lnf_b, R, x.f(), mean.f(), rstd.f());
  }
  // Rows [P × Q] of final hidden states: from the rerun where the query is at or after p0.
  const int rows = P * Q;
  Buffer hid(std::size_t(rows) * d, "query hidden states");
  std::vector<int> target;
  for (int b = 0; b < P; ++b)
    for (int qi = 0; qi < Q; ++qi) {
      const auto& q = queries[static_cast<std::size_t>(qi)];
      const float* src = rerun && q.position >= p0
                             ? x.f() + (std::size_t(b) * S + (q.position - p0)) * d
                             : t.final_hidden.f() + std::size_t(q.position) * d;
      check(cudaMemcpy(hid.f() + (std::size_t(b) * Q + qi) * d, src, d * sizeof(float),
                       cudaMemcpyDeviceToDevice),
            "copy hidden state");
      target.push_back(q.target);
    }
  const Buffer dtarget = upload_ints(target, "targets");
  Buffer prob(rows, "probabilities");
  constexpr int k_chunk = 1024;  // logits rows at a time
  for (int r0 = 0; r0 < rows; r0 += k_chunk) {
    const int n = std::min(k_chunk, rows - r0);
    Buffer z(std::size_t(n) * m.s.vocab, "logits");
    m.gemm_xwt(hid.f() + std::size_t(r0) * d, m.wte.f(), n, d, m.s.vocab, z.f());
    softmax_target_kernel<<<n, 1024>>>(z.f(), dtarget.i() + r0, m.s.vocab, false, prob.f() + r0);
    check(cudaGetLastError(), "softmax_target_kernel");
  }
  check(cudaMemcpy(out, prob.f(), std::size_t(rows) * sizeof(float), cudaMemcpyDeviceToHost),
        "copy probabilities");
}

void Gpt2Engine::mean_site_activations(const std::int32_t* tokens, int count, int n,
                                       const int* positions, int npos, float* out) {
  auto& m = *impl_;
  check(cudaSetDevice(m.device), "cudaSetDevice");
  if (count <= 0 || n <= 0) throw ArgumentError("mean_site_activations: no prompts");
  if (n > m.s.n_positions)
    throw ArgumentError("cuda gpt2: " + std::to_string(n) +
                        " tokens exceed n_positions = " + std::to_string(m.s.n_positions));
  for (std::size_t i = 0; i < std::size_t(count) * n; ++i)
    if (tokens[i] < 0 || tokens[i] >= m.s.vocab)
      throw ArgumentError("cuda gpt2: token id " + std::to_string(tokens[i]) +
                          " outside the vocabulary [0, " + std::to_string(m.s.vocab) + ")");
  for (int i = 0; i < npos; ++i)
    if (positions[i] < 0 || positions[i] >= n)
      throw ArgumentError("position " + std::to_string(positions[i]) + " outside [0, " +
                          std::to_string(n) + ")");
  const int L = m.s.n_layer, d = m.s.d_model, F = m.s.ffn;
  const std::size_t per_layer = std::size_t(npos) * F;
  Buffer sums(per_layer * L, "mean activations");
  check(cudaMemsetAsync(sums.raw(), 0, sums.bytes(), nullptr), "cudaMemsetAsync");
  const Buffer dpositions = upload_ints(std::vector<int>(positions, positions + npos), "positions");
  const int chunk = std::max(1, 4096 / n);  // prompts per batched forward
  for (int b0 = 0; b0 < count; b0 += chunk) {
    const int c = std::min(chunk, count - b0), R = c * n;
    const Buffer tok = upload_ints(
        std::vector<int>(tokens + std::size_t(b0) * n, tokens + std::size_t(b0 + c) * n), "tokens");
    std::vector<int> pos, zero(static_cast<std::size_t>(R), 0), first;
    for (int r = 0; r < R; ++r) {
      pos.push_back(r % n);
      first.push_back(r / n * n);
    }
    const Buffer dpos = upload_ints(pos, "positions"), dzero = upload_ints(zero, "starts"),
                 dfirst = upload_ints(first, "row indices");
    const std::size_t rd = std::size_t(R) * d, rf = std::size_t(R) * F;
    Buffer h(rd, "hidden states"), mid(rd, "residual stream"), pre(rf, "pre"), post(rf, "post");
    embed_kernel<<<blocks_for(rd), k_threads>>>(tok.i(), m.wte.f(), m.wpe.f(), R, d, n, h.f());
    check(cudaGetLastError(), "embed_kernel");
    for (int l = 0; l < L; ++l) {
      LayerCache lc;
      m.attention_forward(l, R, h.f(), dpos.i(), dzero.i(), dfirst.i(), n, nullptr, nullptr, lc,
                          false, mid.f());
      m.ffn_pre(l, R, mid.f(), lc, pre.f(), post.f());
      mean_rows_kernel<<<blocks_for(per_layer), k_threads>>>(
          m.s.site_pre_activation ? pre.f() : post.f(), dpositions.i(), npos, c, n, F,
          1.0f / static_cast<float>(count), sums.f() + std::size_t(l) * per_layer);
      check(cudaGetLastError(), "mean_rows_kernel");
      if (l + 1 < L) m.ffn_post(l, R, post.f(), mid.f(), h.f());
    }
  }
  m.to_host(out, sums.f(), per_layer * L, "copy mean activations");
}

void Gpt2Engine::value_column(int layer, int unit, float* out) const {
  const auto& m = *impl_;
  if (layer < 0 || layer >= m.s.n_layer || unit < 0 || unit >= m.s.ffn)
    throw ArgumentError("value_column: (layer " + std::to_string(layer) + ", unit " +
                        std::to_string(unit) + ") outside the model");
  check(
      cudaMemcpy2D(out, sizeof(float), m.layers[static_cast<std::size_t>(layer)].w_proj.f() + unit,
                   std::size_t(m.s.ffn) * sizeof(float), sizeof(float), m.s.d_model,
                   cudaMemcpyDeviceToHost),
      "copy value vector");
}

void Gpt2Engine::set_value_column(int layer, int unit, const float* v) {
  auto& m = *impl_;
  if (layer < 0 || layer >= m.s.n_layer || unit < 0 || unit >= m.s.ffn)
    throw ArgumentError("set_value_column: (layer " + std::to_string(layer) + ", unit " +
                        std::to_string(unit) + ") outside the model");
  check(cudaMemcpy2D(m.layers[static_cast<std::size_t>(layer)].w_proj.f() + unit,
                     std::size_t(m.s.ffn) * sizeof(float), v, sizeof(float), sizeof(float),
                     m.s.d_model, cudaMemcpyHostToDevice),
        "copy value vector");
  m.bf16_weights.erase(m.layers[static_cast<std::size_t>(layer)].w_proj.f());
}

void Gpt2Engine::embedding_row(std::int32_t id, float* out) const {
  const auto& m = *impl_;
  if (id < 0 || id >= m.s.vocab)
    throw ArgumentError("token id " + std::to_string(id) + " outside the vocabulary [0, " +
                        std::to_string(m.s.vocab) + ")");
  check(cudaMemcpy(out, m.wte.f() + std::size_t(id) * m.s.d_model, m.s.d_model * sizeof(float),
                   cudaMemcpyDeviceToHost),
        "copy embedding row");
}

}  // namespace knprobe::cuda
