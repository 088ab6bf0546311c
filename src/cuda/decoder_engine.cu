// A causal decoder on one GPU: the device side of cuda::CudaGpt2Model and cuda::CudaLlamaModel.
// Rows are positions (of one prompt, or of several patterns / quadrature points), matrices
// row-major as on the CPU. The maths follows include/knprobe/model/gpt2.hpp and llama.hpp step by
// step; see those files for the equations. No Eigen or xtensor here: raw pointers and sizes only.
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

#include "knprobe/backend/cuda/decoder_engine.hpp"

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

/// h[t] = scale · embed[tokens[t]] (+ the learned position embedding of position t mod period,
/// or of at[t] when `at` is given).
__global__ void embed_kernel(const int* tokens, const float* embed, const float* pos, int n, int d,
                             int period, const int* at, float scale, float* h) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= std::size_t(n) * d) return;
  const int t = static_cast<int>(i / d), c = static_cast<int>(i % d);
  float v = scale * embed[std::size_t(tokens[t]) * d + c];
  if (pos) v += pos[std::size_t(at ? at[t] : t % period) * d + c];
  h[i] = v;
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

/// Per row of d features. LayerNorm (b ≠ null): y = (x − μ) r ⊙ g + b, r = 1/√(var + eps);
/// RMSNorm (b = null): y = x r ⊙ g, r = 1/√(mean(x²) + eps). Keeps μ (LayerNorm) and r.
__global__ void norm_forward_kernel(const float* x, const float* g, const float* b, int d,
                                    float eps, float* y, float* mean, float* rstd) {
  __shared__ float scratch[32];
  const float* xr = x + std::size_t(blockIdx.x) * d;
  float mu = 0;
  if (b) {
    float s = 0;
    for (int c = threadIdx.x; c < d; c += blockDim.x) s += xr[c];
    mu = block_sum(s, scratch) / d;
  }
  float v = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) v += (xr[c] - mu) * (xr[c] - mu);
  const float r = rsqrtf(block_sum(v, scratch) / d + eps);
  float* yr = y + std::size_t(blockIdx.x) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x)
    yr[c] = (xr[c] - mu) * r * g[c] + (b ? b[c] : 0.0f);
  if (threadIdx.x == 0) {
    if (mean) mean[blockIdx.x] = mu;
    rstd[blockIdx.x] = r;
  }
}

/// Backward of norm_forward_kernel, plus `add` (may be null or alias dx). With gd = g ⊙ dy:
/// LayerNorm dx = r (gd − mean(gd) − x̂ mean(gd ⊙ x̂)), x̂ = (x − μ) r;
/// RMSNorm   dx = r gd − x r³ mean(gd ⊙ x).
__global__ void norm_backward_kernel(const float* dy, const float* x, const float* g,
                                     const float* mean, const float* rstd, int d, bool layer_norm,
                                     const float* add, float* dx) {
  __shared__ float scratch[32];
  const std::size_t row = blockIdx.x;
  const float* dyr = dy + row * d;
  const float* xr = x + row * d;
  const float mu = layer_norm ? mean[row] : 0.0f, r = rstd[row];
  float s1 = 0, s2 = 0;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    const float gd = g[c] * dyr[c];
    s1 += gd;
    s2 += gd * (xr[c] - mu) * r;
  }
  const float m1 = layer_norm ? block_sum(s1, scratch) / d : 0.0f;
  const float m2 = block_sum(s2, scratch) / d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    const float xh = (xr[c] - mu) * r;
    const float v = r * (g[c] * dyr[c] - m1 - xh * m2);
    dx[row * d + c] = (add ? add[row * d + c] : 0.0f) + v;
  }
}

__device__ float activate(float x, ActivationKind a) {
  switch (a) {
    case ActivationKind::gelu_erf:
      return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case ActivationKind::silu:
      return x / (1.0f + expf(-x));
    default: {
      const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(u));
    }
  }
}
__device__ float activate_grad(float x, ActivationKind a) {
  switch (a) {
    case ActivationKind::gelu_erf:
      return 0.5f * (1.0f + erff(x * 0.7071067811865476f)) +
             x * 0.3989422804014327f * expf(-0.5f * x * x);
    case ActivationKind::silu: {
      const float sg = 1.0f / (1.0f + expf(-x));
      return sg * (1.0f + x * (1.0f - sg));
    }
    default: {
      const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      const float t = tanhf(u);
      return 0.5f * (1.0f + t) +
             0.5f * x * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
    }
  }
}

/// y[r, c] += b[c] (b may be null) + resid[r, c] (resid may be null); rows × cols.
__global__ void bias_residual_kernel(float* y, const float* b, const float* resid, std::size_t rows,
                                     int cols) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  y[i] += (b ? b[i % cols] : 0.0f) + (resid ? resid[i] : 0.0f);
}

/// Dense FFN: pre[r, c] += b[c] (b may be null); post = act(pre).
__global__ void bias_act_kernel(float* pre, const float* b, float* post, std::size_t rows, int cols,
                                ActivationKind a) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  const float z = pre[i] + (b ? b[i % cols] : 0.0f);
  pre[i] = z;
  post[i] = activate(z, a);
}

/// post = act(pre).
__global__ void act_kernel(const float* pre, float* post, std::size_t n, ActivationKind a) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) post[i] = activate(pre[i], a);
}

/// d_pre = d_post ⊙ act'(pre).
__global__ void act_backward_kernel(const float* d_post, const float* pre, float* d_pre,
                                    std::size_t n, ActivationKind a) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) d_pre[i] = d_post[i] * activate_grad(pre[i], a);
}

/// Gated FFN: site = act(g) ⊙ u.
__global__ void gated_kernel(const float* g, const float* u, float* site, std::size_t n,
                             ActivationKind a) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i < n) site[i] = activate(g[i], a) * u[i];
}

/// Gated FFN backward from d_site: dg = d_site ⊙ u ⊙ act'(g), du = d_site ⊙ act(g).
__global__ void gated_backward_kernel(const float* d_site, const float* g, const float* u,
                                      float* dg, float* du, std::size_t n, ActivationKind a) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  dg[i] = d_site[i] * u[i] * activate_grad(g[i], a);
  du[i] = d_site[i] * activate(g[i], a);
}

/// Rotates every head of x [rows × heads·hd] in place by the angles of the row's position
/// pos[r] (sign = −1: the inverse rotation, i.e. backward). Pair j of R = hd: θ_j = p·theta^(−2j/R)
/// (computed in double, as on the CPU); interleaved (2j, 2j+1) or halves (j, j + R/2).
__global__ void rope_kernel(float* x, const int* pos, int rows, int heads, int hd, double theta,
                            bool interleaved, double sign) {
  const int half = hd / 2;
  const std::size_t k = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (k >= std::size_t(rows) * heads * half) return;
  const int j = static_cast<int>(k % half);
  const std::size_t rh = k / half;  // row · heads + head
  const int r = static_cast<int>(rh / heads);
  const double angle = pos[r] * pow(theta, -2.0 * j / hd);
  const float cs = static_cast<float>(cos(angle)), sn = static_cast<float>(sign * sin(angle));
  float* hx = x + rh * hd;
  const int a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + half;
  const float xa = hx[a], xb = hx[b];
  hx[a] = xa * cs - xb * sn;
  hx[b] = xb * cs + xa * sn;
}

/// dst[r, g·hd + c] = Σ_{h in group g} src[r, h·hd + c]: per-query-head key / value gradients
/// summed onto their shared (grouped-query) head.
__global__ void group_sum_kernel(const float* src, int rows, int kv_heads, int group, int hd,
                                 float* dst) {
  const std::size_t k = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  const std::size_t kvd = std::size_t(kv_heads) * hd;
  if (k >= std::size_t(rows) * kvd) return;
  const std::size_t r = k / kvd, gc = k % kvd, g = gc / hd, c = gc % hd;
  float acc = 0;
  for (int i = 0; i < group; ++i) acc += src[r * kvd * group + (g * group + i) * hd + c];
  dst[k] = acc;
}

/// dst[r] = src[index[r]] (rows of `cols` floats).
__global__ void gather_rows_kernel(const float* src, const int* index, int rows, int cols,
                                   float* dst) {
  const std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  if (i >= std::size_t(rows) * cols) return;
  const std::size_t r = i / cols, c = i % cols;
  dst[i] = src[std::size_t(index[r]) * cols + c];
}

/// Attention geometry shared by the kernels: query rows of stride qd = H·hd, keys / values of
/// stride kvd = Hkv·hd, query head h reads kv head h / group; `window` > 0 limits keys to
/// p − window < j (sliding window), on top of j ≤ p.
struct AttnGeom {
  int qd, kvd, hd, group, max_kv, window;
  float scale;
};

__device__ int first_visible(int p, int window) {
  return window > 0 ? max(0, p - window + 1) : 0;
}

/// Row r (position pos[r]) attends to keys first_visible..pos[r]: keys j < start[r] are cached
/// ones, rows cache0[r] + j of kc / vc ([rows × kvd]; cache0 null: 0, one trace's cache), keys
/// j ≥ start[r] are new rows first[r] + j − start[r] of kn / vn. One block per (row, head);
/// scores in dynamic shared memory. Probabilities go to probs[(r·H + h)·max_kv + j] when `probs`
/// is not null.
__global__ void attention_forward_kernel(const float* q, const float* kn, const float* vn,
                                         const float* kc, const float* vc, const int* cache0,
                                         const int* pos, const int* start, const int* first,
                                         AttnGeom g, float* o, float* probs) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  const int r = blockIdx.x, h = blockIdx.y, H = gridDim.y, hk = h / g.group, hd = g.hd;
  const int p = pos[r], s0 = start[r], f0 = first[r], j0 = first_visible(p, g.window);
  if (cache0) {
    kc += std::size_t(cache0[r]) * g.kvd;
    vc += std::size_t(cache0[r]) * g.kvd;
  }
  float* score = smem;          // [p + 1]
  float* qh = smem + g.max_kv;  // [hd]
  for (int c = threadIdx.x; c < hd; c += blockDim.x) qh[c] = q[std::size_t(r) * g.qd + h * hd + c];
  __syncthreads();
  float local_max = -INFINITY;
  for (int j = threadIdx.x; j <= p; j += blockDim.x) {
    if (j < j0) {
      score[j] = -INFINITY;
      continue;
    }
    const float* kr = j < s0 ? kc + std::size_t(j) * g.kvd : kn + std::size_t(f0 + j - s0) * g.kvd;
    kr += hk * hd;
    float acc = 0;
    for (int c = 0; c < hd; ++c) acc += qh[c] * kr[c];
    acc *= g.scale;
    score[j] = acc;
    local_max = fmaxf(local_max, acc);
  }
  const float m = block_max(local_max, scratch);
  float local_sum = 0;
  for (int j = threadIdx.x; j <= p; j += blockDim.x) {
    const float e = j < j0 ? 0.0f : expf(score[j] - m);
    score[j] = e;
    local_sum += e;
  }
  const float inv = 1.0f / block_sum(local_sum, scratch);
  for (int j = threadIdx.x; j <= p; j += blockDim.x) {
    score[j] *= inv;
    if (probs) probs[(std::size_t(r) * H + h) * g.max_kv + j] = score[j];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < hd; c += blockDim.x) {
    float acc = 0;
    for (int j = j0; j <= p; ++j) {
      const float* vr =
          j < s0 ? vc + std::size_t(j) * g.kvd : vn + std::size_t(f0 + j - s0) * g.kvd;
      acc += score[j] * vr[hk * hd + c];
    }
    o[std::size_t(r) * g.qd + h * hd + c] = acc;
  }
}

/// Backward of attention_forward for rows whose only new key / value is their own (start = pos,
/// first = r): from d_o, gives dq and, per query head, the gradients of the row's own key and
/// value (dk, dv: [rows × qd], summed over a group afterwards); cached keys / values (rows
/// cache0[r] + j of kc / vc, as in the forward) are constants.
/// With a_j the probabilities, da_j = d_o·v_j, ds_j = a_j (da_j − Σ_i a_i da_i),
/// dq = scale Σ_j ds_j k_j, dk_p = scale ds_p q, dv_p = a_p d_o.
__global__ void attention_backward_kernel(const float* d_o, const float* q, const float* kn,
                                          const float* vn, const float* kc, const float* vc,
                                          const int* cache0, const int* pos, const float* probs,
                                          AttnGeom g, float* dq, float* dk, float* dv) {
  extern __shared__ float smem[];
  __shared__ float scratch[32];
  const int r = blockIdx.x, h = blockIdx.y, H = gridDim.y, hk = h / g.group, hd = g.hd;
  const int p = pos[r], j0 = first_visible(p, g.window);
  if (cache0) {
    kc += std::size_t(cache0[r]) * g.kvd;
    vc += std::size_t(cache0[r]) * g.kvd;
  }
  float* ds = smem;              // [p + 1]
  float* doh = smem + g.max_kv;  // [hd]
  const float* a = probs + (std::size_t(r) * H + h) * g.max_kv;
  for (int c = threadIdx.x; c < hd; c += blockDim.x)
    doh[c] = d_o[std::size_t(r) * g.qd + h * hd + c];
  __syncthreads();
  float local = 0;
  for (int j = threadIdx.x; j <= p; j += blockDim.x) {
    if (j < j0) {
      ds[j] = 0.0f;
      continue;
    }
    const float* vr = (j < p ? vc + std::size_t(j) * g.kvd : vn + std::size_t(r) * g.kvd) + hk * hd;
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
    for (int j = j0; j <= p; ++j) {
      const float* kr = j < p ? kc + std::size_t(j) * g.kvd : kn + std::size_t(r) * g.kvd;
      acc += ds[j] * kr[hk * hd + c];
    }
    const std::size_t at = std::size_t(r) * g.qd + h * hd + c;
    dq[at] = g.scale * acc;
    dk[at] = g.scale * ds[p] * q[at];
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

/// One activation change of the multi-prompt `probabilities`: site row `row` (of all stacked rows),
/// op 0 sets, op 1 scales.
struct RowIntervention {
  int layer = 0, row = 0, unit = 0, op = 0;
  float value = 0.0f;
};

/// One intervention on one value, the device form of knprobe::intervened (model/concept.hpp):
/// op 0 sets the value, op 1 scales it (DeviceIntervention::op).
__device__ inline float intervened(int op, float value, float x) {
  return op == 0 ? value : x * value;
}

/// Applies the layer's row interventions in order (one thread: order matters when two touch one
/// element).
__global__ void intervene_rows_kernel(float* site, const RowIntervention* iv, int n, int layer,
                                      int ffn) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  for (int i = 0; i < n; ++i) {
    if (iv[i].layer != layer) continue;
    float& x = site[std::size_t(iv[i].row) * ffn + iv[i].unit];
    x = intervened(iv[i].op, iv[i].value, x);
  }
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
    x = intervened(iv[i].op, iv[i].value, x);
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
  std::vector<Buffer> resid_mid, keys, values;  // [L] each [n × d], [n × kvd] ×2
  Buffer final_hidden;                          // [n × d]
};

struct LayerDevice {
  Buffer norm1_g, norm1_b, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, post_attn_norm;
  Buffer norm2_g, norm2_b, w_fc, w_gate, w_up, w_down, b_fc, b_down, post_ffn_norm;
};

/// Per-layer activations kept for backward (rows of the layer's active requests).
struct LayerCache {
  Buffer h_in, mean1, rstd1, q, k, v, q_pre, k_pre, rstd_q, rstd_k, probs, o2, rstd_o2;
  Buffer h_mid, mean2, rstd2, pre, post, g, u, down, rstd_down;
};

/// The rows of a multi-prompt `probabilities` group: one sequence per (prompt, pattern), each cut
/// after its prompt's last query position (later rows cannot change a query: causal attention).
struct StackedRows {
  std::vector<int> tok, pos, first, qrow, target;
  std::vector<RowIntervention> ivs;
  std::vector<char> layer_has;  ///< by layer: any intervention there
};

struct DecoderEngine::Impl {
  DecoderShape s;
  int device = 0;
  Precision precision = Precision::fp32;
  cublasHandle_t blas = nullptr;
  Buffer embed, positions, final_g, final_b, head_w;
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

  int qd() const { return s.n_head * s.head_dim; }
  int kvd() const { return s.n_kv_head * s.head_dim; }
  bool layer_norm_kind() const { return s.norm == NormKind::layer_norm; }
  const float* head() const { return head_w.raw() ? head_w.f() : embed.f(); }
  AttnGeom geom(int l, int max_kv) const {
    AttnGeom g;
    g.qd = qd();
    g.kvd = kvd();
    g.hd = s.head_dim;
    g.group = s.n_head / s.n_kv_head;
    g.max_kv = max_kv;
    g.window = s.window.empty() ? 0 : s.window[static_cast<std::size_t>(l)];
    g.scale = s.attn_scale > 0 ? s.attn_scale : 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    return g;
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

  /// LayerNorm (b set) or RMSNorm (b null) of `rows` rows of `d` features; μ only for LayerNorm.
  void norm(const float* x, const Buffer& g, const Buffer& b, int rows, int d, float* y,
            Buffer* mean, Buffer& rstd) const {
    if (rows == 0) return;
    rstd = Buffer(rows, "norm statistics");
    if (mean && b.raw()) *mean = Buffer(rows, "norm statistics");
    norm_forward_kernel<<<rows, k_threads>>>(x, g.f(), b.raw() ? b.f() : nullptr, d, s.eps, y,
                                             mean && b.raw() ? mean->f() : nullptr, rstd.f());
    check(cudaGetLastError(), "norm_forward_kernel");
  }
  void norm_back(const float* dy, const float* x, const Buffer& g, const Buffer& b,
                 const Buffer* mean, const Buffer& rstd, int rows, int d, const float* add,
                 float* dx) const {
    if (rows == 0) return;
    const bool ln = b.raw() != nullptr;
    norm_backward_kernel<<<rows, k_threads>>>(dy, x, g.f(), ln ? mean->f() : nullptr, rstd.f(), d,
                                              ln, add, dx);
    check(cudaGetLastError(), "norm_backward_kernel");
  }
  void bias_residual(float* y, const Buffer& b, const float* resid, int rows, int cols) const {
    if (rows == 0 || (!b.raw() && !resid)) return;
    const std::size_t n = std::size_t(rows) * cols;
    bias_residual_kernel<<<blocks_for(n), k_threads>>>(y, b.raw() ? b.f() : nullptr, resid, rows,
                                                       cols);
    check(cudaGetLastError(), "bias_residual_kernel");
  }
  void rope(float* x, const int* pos, int rows, int heads, int l, double sign) const {
    if (s.rope == RopeKind::none || rows == 0) return;
    const std::size_t n = std::size_t(rows) * heads * (s.head_dim / 2);
    rope_kernel<<<blocks_for(n), k_threads>>>(x, pos, rows, heads, s.head_dim,
                                              s.rope_theta[static_cast<std::size_t>(l)],
                                              s.rope == RopeKind::interleaved, sign);
    check(cudaGetLastError(), "rope_kernel");
  }
  /// x ← y with `out` = x + sandwich-norm(y) (or x + y).
  void branch_add(const float* y, const Buffer& w, const float* x, int rows, float* out,
                  Buffer& y_keep, Buffer& rstd) const {
    const int d = s.d_model;
    const std::size_t rd = std::size_t(rows) * d;
    if (!s.sandwich_norms) {
      if (out != y)
        check(cudaMemcpyAsync(out, y, rd * sizeof(float), cudaMemcpyDeviceToDevice, nullptr),
              "copy branch");
      bias_residual(out, Buffer(), x, rows, d);
      return;
    }
    y_keep = Buffer(rd, "branch output");
    check(cudaMemcpyAsync(y_keep.f(), y, rd * sizeof(float), cudaMemcpyDeviceToDevice, nullptr),
          "copy branch");
    norm(y_keep.f(), w, Buffer(), rows, d, out, nullptr, rstd);
    bias_residual(out, Buffer(), x, rows, d);
  }

  /// Attention block of layer l for `rows` rows: x (entering the layer) → h_mid; keeps the cache.
  /// Row r has position pos[r]; its keys j < start[r] come from a trace's cache: rows
  /// cache0[r] + j of kc / vc (cache0 null: rows j, one trace).
  void attention_forward(int l, int rows, const float* x, const int* pos, const int* start,
                         const int* first, int max_kv, const float* kc, const float* vc,
                         LayerCache& c, bool keep, float* h_mid, const int* cache0 = nullptr) {
    const auto& L = layers[static_cast<std::size_t>(l)];
    const int d = s.d_model, H = s.n_head, Hk = s.n_kv_head, hd = s.head_dim;
    Buffer a(std::size_t(rows) * d, "attention input");
    norm(x, L.norm1_g, L.norm1_b, rows, d, a.f(), &c.mean1, c.rstd1);
    c.q = Buffer(std::size_t(rows) * qd(), "queries");
    c.k = Buffer(std::size_t(rows) * kvd(), "keys");
    c.v = Buffer(std::size_t(rows) * kvd(), "values");
    gemm_xwt(a.f(), L.wq.f(), rows, d, qd(), c.q.f());
    gemm_xwt(a.f(), L.wk.f(), rows, d, kvd(), c.k.f());
    gemm_xwt(a.f(), L.wv.f(), rows, d, kvd(), c.v.f());
    bias_residual(c.q.f(), L.bq, nullptr, rows, qd());
    bias_residual(c.k.f(), L.bk, nullptr, rows, kvd());
    bias_residual(c.v.f(), L.bv, nullptr, rows, kvd());
    if (s.qk_norm) {
      c.q_pre = Buffer(std::size_t(rows) * qd(), "queries");
      c.k_pre = Buffer(std::size_t(rows) * kvd(), "keys");
      check(cudaMemcpyAsync(c.q_pre.f(), c.q.f(), c.q.bytes(), cudaMemcpyDeviceToDevice, nullptr),
            "copy queries");
      check(cudaMemcpyAsync(c.k_pre.f(), c.k.f(), c.k.bytes(), cudaMemcpyDeviceToDevice, nullptr),
            "copy keys");
      norm(c.q_pre.f(), L.q_norm, Buffer(), rows * H, hd, c.q.f(), nullptr, c.rstd_q);
      norm(c.k_pre.f(), L.k_norm, Buffer(), rows * Hk, hd, c.k.f(), nullptr, c.rstd_k);
    }
    rope(c.q.f(), pos, rows, H, l, 1.0);
    rope(c.k.f(), pos, rows, Hk, l, 1.0);
    if (keep) c.probs = Buffer(std::size_t(rows) * H * max_kv, "attention weights");
    Buffer o(std::size_t(rows) * qd(), "attention output");
    const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(H));
    const std::size_t smem = (std::size_t(max_kv) + hd) * sizeof(float);
    attention_forward_kernel<<<grid, 128, smem>>>(c.q.f(), c.k.f(), c.v.f(), kc, vc, cache0, pos,
                                                  start, first, geom(l, max_kv), o.f(),
                                                  keep ? c.probs.f() : nullptr);
    check(cudaGetLastError(), "attention_forward_kernel");
    Buffer o2(std::size_t(rows) * d, "attention projection");
    gemm_xwt(o.f(), L.wo.f(), rows, qd(), d, o2.f());
    bias_residual(o2.f(), L.bo, nullptr, rows, d);
    branch_add(o2.f(), L.post_attn_norm, x, rows, h_mid, c.o2, c.rstd_o2);
  }

  /// h_mid → the neuron site of layer l (dense: pre = z, post = act z; gated: g, u, post =
  /// act(g) ⊙ u); keeps what backward needs in the cache.
  void ffn_pre(int l, int rows, const float* h_mid, LayerCache& c, float* pre, float* post) {
    if (rows == 0) return;
    const auto& L = layers[static_cast<std::size_t>(l)];
    const int d = s.d_model, F = s.ffn;
    const std::size_t n = std::size_t(rows) * F;
    Buffer f(std::size_t(rows) * d, "ffn input");
    norm(h_mid, L.norm2_g, L.norm2_b, rows, d, f.f(), &c.mean2, c.rstd2);
    if (!s.gated) {
      gemm_xwt(f.f(), L.w_fc.f(), rows, d, F, pre);
      bias_act_kernel<<<blocks_for(n), k_threads>>>(pre, L.b_fc.raw() ? L.b_fc.f() : nullptr, post,
                                                    rows, F, s.activation);
      check(cudaGetLastError(), "bias_act_kernel");
      return;
    }
    c.g = Buffer(n, "ffn gate");
    c.u = Buffer(n, "ffn up");
    gemm_xwt(f.f(), L.w_gate.f(), rows, d, F, c.g.f());
    gemm_xwt(f.f(), L.w_up.f(), rows, d, F, c.u.f());
    gated_kernel<<<blocks_for(n), k_threads>>>(c.g.f(), c.u.f(), post, n, s.activation);
    check(cudaGetLastError(), "gated_kernel");
  }

  /// h = h_mid + [norm](post W_downᵀ + b_down).
  void ffn_post(int l, int rows, const float* post, const float* h_mid, float* h, LayerCache* c) {
    if (rows == 0) return;
    const auto& L = layers[static_cast<std::size_t>(l)];
    Buffer down(std::size_t(rows) * s.d_model, "ffn output");
    gemm_xwt(post, L.w_down.f(), rows, s.ffn, s.d_model, down.f());
    bias_residual(down.f(), L.b_down, nullptr, rows, s.d_model);
    Buffer keep, rstd;
    branch_add(down.f(), L.post_ffn_norm, h_mid, rows, h, c ? c->down : keep,
               c ? c->rstd_down : rstd);
  }

  /// The neuron site of a dense FFN's rows (pre- or post-activation).
  float* site_of(float* pre, float* post) const {
    return !s.gated && s.site_pre_activation ? pre : post;
  }

  void act_forward(const float* pre, float* post, std::size_t n) const {
    if (n == 0) return;
    act_kernel<<<blocks_for(n), k_threads>>>(pre, post, n, s.activation);
    check(cudaGetLastError(), "act_kernel");
  }
  void act_backward(const float* d_post, const float* pre, float* d_pre, std::size_t n) const {
    if (n == 0) return;
    act_backward_kernel<<<blocks_for(n), k_threads>>>(d_post, pre, d_pre, n, s.activation);
    check(cudaGetLastError(), "act_backward_kernel");
  }
  void gather(const float* src, const Buffer& index, int rows, int cols, float* dst) const {
    if (rows == 0) return;
    gather_rows_kernel<<<blocks_for(std::size_t(rows) * cols), k_threads>>>(src, index.i(), rows,
                                                                            cols, dst);
    check(cudaGetLastError(), "gather_rows_kernel");
  }
  void softmax_target(float* z, const int* target, int rows, bool grad, float* prob) const {
    if (rows == 0) return;
    softmax_target_kernel<<<rows, 1024>>>(z, target, s.vocab, grad, prob);
    check(cudaGetLastError(), "softmax_target_kernel");
  }
  /// Embeds `rows` tokens; row t has position t mod period, or at[t] when `at` is given.
  void embed_rows(const int* tokens, int rows, int period, float* h,
                  const int* at = nullptr) const {
    const std::size_t n = std::size_t(rows) * s.d_model;
    embed_kernel<<<blocks_for(n), k_threads>>>(tokens, embed.f(),
                                               positions.raw() ? positions.f() : nullptr, rows,
                                               s.d_model, period, at, s.embed_scale, h);
    check(cudaGetLastError(), "embed_kernel");
  }
  void check_token(std::int32_t t) const {
    if (t < 0 || t >= s.vocab)
      throw ArgumentError("token id " + std::to_string(t) + " outside the vocabulary [0, " +
                          std::to_string(s.vocab) + ")");
  }
  void check_length(int n) const {
    if (s.n_positions > 0 && n > s.n_positions)
      throw ArgumentError("cuda decoder: " + std::to_string(n) +
                          " tokens exceed n_positions = " + std::to_string(s.n_positions));
  }
  /// prob[r] = softmax(x[r] Eᵀ)[target[r]] for `rows` final hidden states (device pointers), the
  /// logits made 1024 rows at a time.
  void head_probabilities(const float* x, const int* target, int rows, float* prob) {
    constexpr int k_chunk = 1024;
    for (int r0 = 0; r0 < rows; r0 += k_chunk) {
      const int n = std::min(k_chunk, rows - r0);
      Buffer z(std::size_t(n) * s.vocab, "logits");
      gemm_xwt(x + std::size_t(r0) * s.d_model, head(), n, s.d_model, s.vocab, z.f());
      softmax_target(z.f(), target + r0, n, false, prob + r0);
    }
  }
  /// One group of the multi-prompt `probabilities`: every row from the embedding, out[Q].
  void probabilities_group(const StackedRows& g, float* out);
};

namespace {
Buffer upload_opt(const float* host, std::size_t n, const char* what) {
  return host ? upload(host, n, what) : Buffer();
}
}  // namespace

DecoderEngine::DecoderEngine(const DecoderShape& shape, const DecoderHostWeights& w, int device)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.s = shape;
  m.device = device;
  const auto& s = shape;
  if (s.n_layer <= 0 || s.n_head <= 0 || s.n_kv_head <= 0 || s.head_dim <= 0 || s.d_model <= 0 ||
      s.ffn <= 0 || s.vocab <= 0 || s.n_head % s.n_kv_head != 0 ||
      (s.rope != RopeKind::none && s.head_dim % 2 != 0))
    throw ArgumentError("cuda decoder: invalid shape (n_layer " + std::to_string(s.n_layer) +
                        ", heads " + std::to_string(s.n_head) + "/" + std::to_string(s.n_kv_head) +
                        ", head_dim " + std::to_string(s.head_dim) + ", d_model " +
                        std::to_string(s.d_model) + ")");
  if (s.rope != RopeKind::none && s.rope_theta.size() != static_cast<std::size_t>(s.n_layer))
    throw ArgumentError("cuda decoder: one RoPE base per layer needed");
  if (!s.window.empty() && s.window.size() != static_cast<std::size_t>(s.n_layer))
    throw ArgumentError("cuda decoder: one sliding window per layer needed");
  if (static_cast<int>(w.layers.size()) != s.n_layer)
    throw ArgumentError("cuda decoder: " + std::to_string(w.layers.size()) +
                        " layers of weights for " + std::to_string(s.n_layer) + " layers");
  if (device_count() <= device)
    throw CudaError("cuda decoder: no CUDA device " + std::to_string(device) + " (" +
                    std::to_string(device_count()) + " found)");
  const std::size_t d = s.d_model, f = s.ffn, q = std::size_t(s.n_head) * s.head_dim,
                    kv = std::size_t(s.n_kv_head) * s.head_dim;
  const std::size_t per_layer = d * q * 2 + d * kv * 2 + (s.gated ? 3 : 2) * d * f + 8 * d + f;
  const std::size_t floats = std::size_t(s.vocab) * d * (w.head ? 2 : 1) +
                             (w.positions ? std::size_t(s.n_positions) * d : 0) + 2 * d +
                             per_layer * s.n_layer;
  m.weight_bytes = floats * sizeof(float);
  const auto [free, total] = memory_info(device);
  // Margin for the working memory of a batched gradient call (logits of up to 2048 rows).
  const std::size_t margin = std::size_t(2048) * s.vocab * sizeof(float) + (512u << 20);
  if (m.weight_bytes + margin > free)
    throw CudaError("cuda decoder: the model needs " + gib(m.weight_bytes) + " of weights plus " +
                    gib(margin) + " working memory, but " + cuda::device_name(device) + " has " +
                    gib(free) + " free of " + gib(total) + "; use the CPU backend");
  check(cudaSetDevice(device), "cudaSetDevice");
  retain_pool_memory(device);
  check(cublasCreate(&m.blas), "cublasCreate");
  check(cublasSetMathMode(m.blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  m.embed = upload(w.embed, std::size_t(s.vocab) * d, "token embedding");
  m.positions = upload_opt(w.positions, std::size_t(s.n_positions) * d, "position embedding");
  m.final_g = upload(w.final_g, d, "final norm");
  m.final_b = upload_opt(w.final_b, d, "final norm bias");
  m.head_w = upload_opt(w.head, std::size_t(s.vocab) * d, "output head");
  const std::size_t hd = s.head_dim;
  for (const auto& l : w.layers) {
    LayerDevice x;
    x.norm1_g = upload(l.norm1_g, d, "attention norm");
    x.norm1_b = upload_opt(l.norm1_b, d, "attention norm bias");
    x.wq = upload(l.wq, q * d, "wq");
    x.wk = upload(l.wk, kv * d, "wk");
    x.wv = upload(l.wv, kv * d, "wv");
    x.wo = upload(l.wo, d * q, "wo");
    x.bq = upload_opt(l.bq, q, "bq");
    x.bk = upload_opt(l.bk, kv, "bk");
    x.bv = upload_opt(l.bv, kv, "bv");
    x.bo = upload_opt(l.bo, d, "bo");
    if (s.qk_norm) {
      x.q_norm = upload(l.q_norm, hd, "q norm");
      x.k_norm = upload(l.k_norm, hd, "k norm");
    }
    if (s.sandwich_norms) {
      x.post_attn_norm = upload(l.post_attn_norm, d, "post-attention norm");
      x.post_ffn_norm = upload(l.post_ffn_norm, d, "post-FFN norm");
    }
    x.norm2_g = upload(l.norm2_g, d, "ffn norm");
    x.norm2_b = upload_opt(l.norm2_b, d, "ffn norm bias");
    if (s.gated) {
      x.w_gate = upload(l.w_gate, f * d, "ffn gate");
      x.w_up = upload(l.w_up, f * d, "ffn up");
    } else {
      x.w_fc = upload(l.w_fc, f * d, "ffn fc");
      x.b_fc = upload_opt(l.b_fc, f, "ffn fc bias");
    }
    x.w_down = upload(l.w_down, d * f, "ffn down");
    x.b_down = upload_opt(l.b_down, d, "ffn down bias");
    m.layers.push_back(std::move(x));
  }
}

DecoderEngine::~DecoderEngine() = default;
DecoderEngine::DecoderEngine(DecoderEngine&&) noexcept = default;
DecoderEngine& DecoderEngine::operator=(DecoderEngine&&) noexcept = default;

const DecoderShape& DecoderEngine::shape() const {
  return impl_->s;
}
void DecoderEngine::set_precision(Precision p) {
  impl_->precision = p;
}
Precision DecoderEngine::precision() const {
  return impl_->precision;
}
std::size_t DecoderEngine::weight_bytes() const {
  return impl_->weight_bytes;
}
std::string DecoderEngine::device_name() const {
  return cuda::device_name(impl_->device);
}

std::shared_ptr<const DeviceTrace> DecoderEngine::trace(const std::int32_t* token_ptr, int n,
                                                        float* acts) {
  auto& m = *impl_;
  check(cudaSetDevice(m.device), "cudaSetDevice");
  if (n <= 0) throw ArgumentError("cuda decoder: empty token sequence");
  m.check_length(n);
  const std::vector<int> tokens(token_ptr, token_ptr + n);
  for (auto t : tokens) m.check_token(t);
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
  m.embed_rows(tok.i(), n, n, h.f());
  for (int l = 0; l < m.s.n_layer; ++l) {
    LayerCache c;
    Buffer mid(nd, "residual stream");
    m.attention_forward(l, n, h.f(), dpos.i(), dzero.i(), dzero.i(), n, nullptr, nullptr, c, false,
                        mid.f());
    m.ffn_pre(l, n, mid.f(), c, pre.f(), post.f());
    check(cudaMemcpyAsync(all_acts.f() + std::size_t(l) * nf, m.site_of(pre.f(), post.f()),
                          nf * sizeof(float), cudaMemcpyDeviceToDevice, nullptr),
          "copy activations");
    m.ffn_post(l, n, post.f(), mid.f(), h.f(), nullptr);
    tr->resid_mid.push_back(std::move(mid));
    tr->keys.push_back(std::move(c.k));
    tr->values.push_back(std::move(c.v));
  }
  tr->final_hidden = Buffer(nd, "final hidden states");
  Buffer mean, rstd;
  m.norm(h.f(), m.final_g, m.final_b, n, d, tr->final_hidden.f(), &mean, rstd);
  m.to_host(acts, all_acts.f(), nf * m.s.n_layer, "copy activations");
  return tr;
}

void DecoderEngine::logits(const DeviceTrace& t, float* out) {
  auto& m = *impl_;
  check(cudaSetDevice(m.device), "cudaSetDevice");
  Buffer z(std::size_t(t.n) * m.s.vocab, "logits");
  m.gemm_xwt(t.final_hidden.f(), m.head(), t.n, m.s.d_model, m.s.vocab, z.f());
  check(cudaMemcpy(out, z.f(), z.bytes(), cudaMemcpyDeviceToHost), "copy logits");
}

void DecoderEngine::layer_gradients(const DeviceTrace& t, const GradientRequest* req_ptr,
                                    int count) {
  for (int i = 0; i < count; ++i)
    if (req_ptr[i].trace != 0)
      throw ArgumentError("layer_gradients: request " + std::to_string(i) + " names trace " +
                          std::to_string(req_ptr[i].trace) + " of a call with one trace");
  const DeviceTrace* one = &t;
  layer_gradients(&one, 1, req_ptr, count);
}

void DecoderEngine::layer_gradients(const DeviceTrace* const* traces, int n_traces,
                                    const GradientRequest* req_ptr, int count) {
  auto& m = *impl_;
  const std::vector<GradientRequest> reqs(req_ptr, req_ptr + std::max(count, 0));
  check(cudaSetDevice(m.device), "cudaSetDevice");
  if (reqs.empty()) return;
  const int L = m.s.n_layer, d = m.s.d_model, F = m.s.ffn, H = m.s.n_head, Hk = m.s.n_kv_head;
  if (n_traces <= 0 || traces == nullptr)
    throw ArgumentError("layer_gradients: requests but no trace");
  for (int i = 0; i < n_traces; ++i)
    if (traces[i] == nullptr)
      throw ArgumentError("layer_gradients: trace " + std::to_string(i) + " is null");
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const auto& q = reqs[i];
    if (q.trace < 0 || q.trace >= n_traces)
      throw ArgumentError("layer_gradients: request " + std::to_string(i) + " names trace " +
                          std::to_string(q.trace) + " of " + std::to_string(n_traces));
    const int n = traces[q.trace]->n;
    if (q.layer < 0 || q.layer >= L)
      throw ArgumentError("layer " + std::to_string(q.layer) + " outside [0, " + std::to_string(L) +
                          ")");
    if (q.position < 0 || q.position >= n)
      throw ArgumentError("position " + std::to_string(q.position) + " outside [0, " +
                          std::to_string(n) + ")");
    m.check_token(q.target);
    if (q.rows <= 0) throw ArgumentError("layer_gradients: no points");
  }
  // Rows ordered by request layer: the rows active at layer l are then a prefix.
  std::vector<std::size_t> order(reqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return reqs[a].layer < reqs[b].layer; });
  std::vector<int> row_begin(reqs.size()), upto(static_cast<std::size_t>(L), 0);
  // Several traces: each layer's cached keys / values of all traces side by side (trace i's
  // rows from kv_offset[i]), every row reading its own trace's through cache0.
  std::vector<int> kv_offset(static_cast<std::size_t>(n_traces), 0);
  for (int i = 1; i < n_traces; ++i)
    kv_offset[static_cast<std::size_t>(i)] =
        kv_offset[static_cast<std::size_t>(i - 1)] + traces[i - 1]->n;
  std::vector<int> pos, target, cache0;
  int total = 0;
  for (std::size_t i : order) {
    row_begin[i] = total;
    for (int b = 0; b < reqs[i].rows; ++b) {
      pos.push_back(reqs[i].position);
      target.push_back(reqs[i].target);
      cache0.push_back(kv_offset[static_cast<std::size_t>(reqs[i].trace)]);
    }
    total += reqs[i].rows;
    for (int l = reqs[i].layer; l < L; ++l) upto[static_cast<std::size_t>(l)] = total;
  }
  auto before = [&](int l) { return l == 0 ? 0 : upto[static_cast<std::size_t>(l - 1)]; };
  const int l_min = reqs[order.front()].layer;
  int max_kv = 0;
  for (int p : pos) max_kv = std::max(max_kv, p + 1);
  const Buffer dpos = upload_ints(pos, "positions"), dtarget = upload_ints(target, "targets");
  const bool several = n_traces > 1;
  const Buffer dcache0 = several ? upload_ints(cache0, "cache rows") : Buffer();
  const int* c0 = several ? dcache0.i() : nullptr;
  std::vector<Buffer> kcat, vcat;
  if (several) {
    const int kvd_ = m.kvd();
    const std::size_t all = std::size_t(kv_offset.back() + traces[n_traces - 1]->n) * kvd_;
    for (int l = 0; l < L; ++l) {
      kcat.emplace_back(l >= l_min ? all : 0, "keys of all traces");
      vcat.emplace_back(l >= l_min ? all : 0, "values of all traces");
      if (l < l_min) continue;
      for (int i = 0; i < n_traces; ++i) {
        const std::size_t at = std::size_t(kv_offset[static_cast<std::size_t>(i)]) * kvd_;
        const std::size_t bytes = std::size_t(traces[i]->n) * kvd_ * sizeof(float);
        check(
            cudaMemcpyAsync(kcat.back().f() + at, traces[i]->keys[static_cast<std::size_t>(l)].f(),
                            bytes, cudaMemcpyDeviceToDevice, nullptr),
            "copy keys");
        check(cudaMemcpyAsync(vcat.back().f() + at,
                              traces[i]->values[static_cast<std::size_t>(l)].f(), bytes,
                              cudaMemcpyDeviceToDevice, nullptr),
              "copy values");
      }
    }
  }
  auto keys_of = [&](int l) -> const float* {
    return several ? kcat[static_cast<std::size_t>(l)].f()
                   : traces[0]->keys[static_cast<std::size_t>(l)].f();
  };
  auto values_of = [&](int l) -> const float* {
    return several ? vcat[static_cast<std::size_t>(l)].f()
                   : traces[0]->values[static_cast<std::size_t>(l)].f();
  };
  std::vector<int> rows_seq(static_cast<std::size_t>(total));
  std::iota(rows_seq.begin(), rows_seq.end(), 0);
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
      check(cudaMemcpyAsync(c.h_in.f(), h.f(), std::size_t(nb) * d * sizeof(float),
                            cudaMemcpyDeviceToDevice, nullptr),
            "copy layer input");
      m.attention_forward(l, nb, c.h_in.f(), dpos.i(), dpos.i(), dfirst.i(), max_kv, keys_of(l),
                          values_of(l), c, true, c.h_mid.f(), c0);
      m.ffn_pre(l, nb, c.h_mid.f(), c, c.pre.f(), c.post.f());
    }
    // Requests of this layer join: h_mid from the trace, the site from their points.
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      if (reqs[i].layer != l) continue;
      const auto& q = reqs[i];
      const std::size_t r0 = static_cast<std::size_t>(row_begin[i]);
      const Buffer idx = upload_ints(std::vector<int>(static_cast<std::size_t>(q.rows), q.position),
                                     "row indices");
      m.gather(traces[q.trace]->resid_mid[static_cast<std::size_t>(l)].f(), idx, q.rows, d,
               c.h_mid.f() + r0 * d);
      float* site = m.site_of(c.pre.f(), c.post.f()) + r0 * F;
      m.to_device(site, q.points, std::size_t(q.rows) * F, "copy points");
      if (site != c.post.f() + r0 * F)
        m.act_forward(c.pre.f() + r0 * F, c.post.f() + r0 * F, std::size_t(q.rows) * F);
    }
    m.ffn_post(l, nu, c.post.f(), c.h_mid.f(), h.f(), &c);
  }

  // Head on every row: P and dP/dz, then back to dP/dh.
  Buffer x(std::size_t(total) * d, "final hidden"), mean, rstd;
  m.norm(h.f(), m.final_g, m.final_b, total, d, x.f(), &mean, rstd);
  Buffer prob(total, "probabilities");
  {
    Buffer z(std::size_t(total) * m.s.vocab, "logits");
    m.gemm_xwt(x.f(), m.head(), total, d, m.s.vocab, z.f());
    m.softmax_target(z.f(), dtarget.i(), total, true, prob.f());
    m.gemm_xw(z.f(), m.head(), total, m.s.vocab, d, x.f());
  }
  Buffer dh(std::size_t(total) * d, "hidden gradients");
  m.norm_back(x.f(), h.f(), m.final_g, m.final_b, &mean, rstd, total, d, nullptr, dh.f());

  // Backward, top layer down; rows of requests at layer l stop at the site.
  const auto hd = m.s.head_dim;
  const int qd = m.qd(), kvd = m.kvd();
  for (int l = L - 1; l >= l_min; --l) {
    const auto& W = m.layers[static_cast<std::size_t>(l)];
    LayerCache& c = cache[static_cast<std::size_t>(l)];
    const int nb = before(l), nu = upto[static_cast<std::size_t>(l)];
    const std::size_t nuf = std::size_t(nu) * F, nbf = std::size_t(nb) * F;
    // Through the sandwich norm of the FFN output, then W_down: dL/d(site) of all rows.
    Buffer d_down;
    const float* dd = dh.f();
    if (m.s.sandwich_norms) {
      d_down = Buffer(std::size_t(nu) * d, "ffn output gradients");
      m.norm_back(dh.f(), c.down.f(), W.post_ffn_norm, Buffer(), nullptr, c.rstd_down, nu, d,
                  nullptr, d_down.f());
      dd = d_down.f();
    }
    Buffer d_post(nuf, "ffn gradients");
    m.gemm_xw(dd, W.w_down.f(), nu, d, F, d_post.f());
    // Site gradients of the rows that joined here.
    const std::size_t fresh = nuf - nbf;
    if (!m.s.gated && m.s.site_pre_activation)
      m.act_backward(d_post.f() + nbf, c.pre.f() + nbf, grads.f() + nbf, fresh);
    else if (fresh > 0)
      check(cudaMemcpyAsync(grads.f() + nbf, d_post.f() + nbf, fresh * sizeof(float),
                            cudaMemcpyDeviceToDevice, nullptr),
            "copy site gradients");
    if (nb == 0) break;
    Buffer df(std::size_t(nb) * d, "ffn input gradients");
    if (m.s.gated) {
      Buffer dg(nbf, "gate gradients"), du(nbf, "up gradients");
      gated_backward_kernel<<<blocks_for(nbf), k_threads>>>(d_post.f(), c.g.f(), c.u.f(), dg.f(),
                                                            du.f(), nbf, m.s.activation);
      check(cudaGetLastError(), "gated_backward_kernel");
      m.gemm_xw(dg.f(), W.w_gate.f(), nb, F, d, df.f());
      m.gemm_xw(du.f(), W.w_up.f(), nb, F, d, df.f(), 1.0f);
    } else {
      Buffer d_pre(nbf, "ffn gradients");
      m.act_backward(d_post.f(), c.pre.f(), d_pre.f(), nbf);
      m.gemm_xw(d_pre.f(), W.w_fc.f(), nb, F, d, df.f());
    }
    Buffer dmid(std::size_t(nb) * d, "residual gradients");
    m.norm_back(df.f(), c.h_mid.f(), W.norm2_g, W.norm2_b, &c.mean2, c.rstd2, nb, d, dh.f(),
                dmid.f());
    Buffer d_o2_buf;
    const float* d_o2 = dmid.f();
    if (m.s.sandwich_norms) {
      d_o2_buf = Buffer(std::size_t(nb) * d, "attention output gradients");
      m.norm_back(dmid.f(), c.o2.f(), W.post_attn_norm, Buffer(), nullptr, c.rstd_o2, nb, d,
                  nullptr, d_o2_buf.f());
      d_o2 = d_o2_buf.f();
    }
    Buffer d_o(std::size_t(nb) * qd, "attention gradients");
    m.gemm_xw(d_o2, W.wo.f(), nb, d, qd, d_o.f());
    Buffer dq(std::size_t(nb) * qd, "dq"), dk_h(std::size_t(nb) * qd, "dk"),
        dv_h(std::size_t(nb) * qd, "dv");
    const dim3 grid(static_cast<unsigned>(nb), static_cast<unsigned>(H));
    const std::size_t smem = (std::size_t(max_kv) + hd) * sizeof(float);
    attention_backward_kernel<<<grid, 128, smem>>>(d_o.f(), c.q.f(), c.k.f(), c.v.f(), keys_of(l),
                                                   values_of(l), c0, dpos.i(), c.probs.f(),
                                                   m.geom(l, max_kv), dq.f(), dk_h.f(), dv_h.f());
    check(cudaGetLastError(), "attention_backward_kernel");
    Buffer dk, dv;
    const float *dkp = dk_h.f(), *dvp = dv_h.f();
    if (H != Hk) {
      dk = Buffer(std::size_t(nb) * kvd, "dk");
      dv = Buffer(std::size_t(nb) * kvd, "dv");
      const std::size_t n = std::size_t(nb) * kvd;
      group_sum_kernel<<<blocks_for(n), k_threads>>>(dk_h.f(), nb, Hk, H / Hk, hd, dk.f());
      group_sum_kernel<<<blocks_for(n), k_threads>>>(dv_h.f(), nb, Hk, H / Hk, hd, dv.f());
      check(cudaGetLastError(), "group_sum_kernel");
      dkp = dk.f();
      dvp = dv.f();
    }
    float* dqm = dq.f();
    float* dkm = const_cast<float*>(dkp);
    m.rope(dqm, dpos.i(), nb, H, l, -1.0);
    m.rope(dkm, dpos.i(), nb, Hk, l, -1.0);
    if (m.s.qk_norm) {
      m.norm_back(dqm, c.q_pre.f(), W.q_norm, Buffer(), nullptr, c.rstd_q, nb * H, hd, nullptr,
                  dqm);
      m.norm_back(dkm, c.k_pre.f(), W.k_norm, Buffer(), nullptr, c.rstd_k, nb * Hk, hd, nullptr,
                  dkm);
    }
    Buffer da(std::size_t(nb) * d, "attention input gradients");
    m.gemm_xw(dqm, W.wq.f(), nb, qd, d, da.f());
    m.gemm_xw(dkm, W.wk.f(), nb, kvd, d, da.f(), 1.0f);
    m.gemm_xw(dvp, W.wv.f(), nb, kvd, d, da.f(), 1.0f);
    m.norm_back(da.f(), c.h_in.f(), W.norm1_g, W.norm1_b, &c.mean1, c.rstd1, nb, d, dmid.f(),
                dh.f());
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

void DecoderEngine::probabilities(const DeviceTrace& t, int P,
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
    m.check_token(q.target);
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
    std::vector<int> pos, start(static_cast<std::size_t>(R), p0), first;
    for (int b = 0; b < P; ++b)
      for (int i = 0; i < S; ++i) {
        pos.push_back(p0 + i);
        first.push_back(b * S);
      }
    const Buffer dpos = upload_ints(pos, "positions"), dstart = upload_ints(start, "starts"),
                 dfirst = upload_ints(first, "row indices");
    Buffer mid(std::size_t(R) * d, "residual stream"), pre(std::size_t(R) * F, "pre"),
        post(std::size_t(R) * F, "post");
    m.gather(t.resid_mid[static_cast<std::size_t>(l0)].f(), dpos, R, d, mid.f());
    for (int l = l0; l < L; ++l) {
      LayerCache c;
      if (l > l0)
        m.attention_forward(l, R, h.f(), dpos.i(), dstart.i(), dfirst.i(), t.n,
                            t.keys[static_cast<std::size_t>(l)].f(),
                            t.values[static_cast<std::size_t>(l)].f(), c, false, mid.f());
      m.ffn_pre(l, R, mid.f(), c, pre.f(), post.f());
      float* site = m.site_of(pre.f(), post.f());
      intervene_kernel<<<1, 1>>>(site, static_cast<const DeviceIntervention*>(div.raw()),
                                 static_cast<int>(ivs.size()), l, S, p0, F);
      check(cudaGetLastError(), "intervene_kernel");
      if (site != post.f()) m.act_forward(pre.f(), post.f(), std::size_t(R) * F);
      m.ffn_post(l, R, post.f(), mid.f(), h.f(), nullptr);
    }
    x = Buffer(std::size_t(R) * d, "final hidden");
    Buffer mean, rstd;
    m.norm(h.f(), m.final_g, m.final_b, R, d, x.f(), &mean, rstd);
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
      check(cudaMemcpyAsync(hid.f() + (std::size_t(b) * Q + qi) * d, src, d * sizeof(float),
                            cudaMemcpyDeviceToDevice, nullptr),
            "copy hidden state");
      target.push_back(q.target);
    }
  const Buffer dtarget = upload_ints(target, "targets");
  Buffer prob(rows, "probabilities");
  m.head_probabilities(hid.f(), dtarget.i(), rows, prob.f());
  check(cudaMemcpy(out, prob.f(), std::size_t(rows) * sizeof(float), cudaMemcpyDeviceToHost),
        "copy probabilities");
}

namespace {

/// Rows a prompt needs per pattern: up to and including its last query position.
int used_length(const DevicePrompt& p, const std::vector<DeviceQuery>& queries) {
  int n = 0;
  for (int q = p.query0; q < p.query0 + p.queries; ++q)
    n = std::max(n, queries[static_cast<std::size_t>(q)].position + 1);
  return n;
}

}  // namespace

void DecoderEngine::probabilities(const std::int32_t* tokens,
                                  const std::vector<DevicePrompt>& prompts,
                                  const std::vector<DeviceIntervention>& ivs,
                                  const std::vector<DeviceQuery>& queries, float* out) {
  auto& m = *impl_;
  check(cudaSetDevice(m.device), "cudaSetDevice");
  const int L = m.s.n_layer, F = m.s.ffn;
  // Checks first, naming the prompt; the prompts' token, pattern and query ranges must follow
  // each other in order.
  int patterns = 0, nq = 0, ntok = 0;
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    const auto& p = prompts[r];
    const std::string who = "probabilities: prompt " + std::to_string(r) + ": ";
    if (p.n <= 0) throw ArgumentError(who + "no tokens");
    if (p.offset != ntok || p.pattern0 != patterns || p.query0 != nq || p.patterns < 0 ||
        p.queries < 0)
      throw ArgumentError(who + "token / pattern / query ranges out of order");
    if (p.query0 + p.queries > static_cast<int>(queries.size()))
      throw ArgumentError(who + "missing queries");
    try {
      m.check_length(p.n);
      for (int j = 0; j < p.n; ++j) m.check_token(tokens[p.offset + j]);
      for (int q = p.query0; q < p.query0 + p.queries; ++q) {
        const auto& query = queries[static_cast<std::size_t>(q)];
        if (query.position < 0 || query.position >= p.n)
          throw ArgumentError("query position " + std::to_string(query.position) + " outside [0, " +
                              std::to_string(p.n) + ")");
        m.check_token(query.target);
      }
    } catch (const ArgumentError& e) {
      throw ArgumentError(who + e.what());
    }
    ntok += p.n;
    patterns += p.patterns;
    nq += p.queries;
  }
  if (nq != static_cast<int>(queries.size()))
    throw ArgumentError("probabilities: the prompts name " + std::to_string(nq) + " queries, got " +
                        std::to_string(queries.size()));
  std::vector<int> owner(static_cast<std::size_t>(patterns));  // prompt of each pattern
  for (std::size_t r = 0; r < prompts.size(); ++r)
    for (int b = 0; b < prompts[r].patterns; ++b) owner[prompts[r].pattern0 + b] = int(r);
  for (const auto& iv : ivs) {
    if (iv.pattern < 0 || iv.pattern >= patterns)
      throw ArgumentError("probabilities: intervention of pattern " + std::to_string(iv.pattern) +
                          ", outside [0, " + std::to_string(patterns) + ")");
    const auto& p = prompts[owner[iv.pattern]];
    const std::string who = "probabilities: prompt " + std::to_string(owner[iv.pattern]) + ": ";
    if (iv.layer < 0 || iv.layer >= L)
      throw ArgumentError(who + "layer " + std::to_string(iv.layer) + " outside [0, " +
                          std::to_string(L) + ")");
    if (iv.position < 0 || iv.position >= p.n)
      throw ArgumentError(who + "intervention position " + std::to_string(iv.position) +
                          " outside [0, " + std::to_string(p.n) + ")");
    if (iv.unit < 0 || iv.unit >= F)
      throw ArgumentError(who + "unit " + std::to_string(iv.unit) + " outside [0, " +
                          std::to_string(F) + ")");
  }
  // Output offset of each prompt's [patterns × queries] block.
  std::vector<std::size_t> out_at(prompts.size() + 1, 0);
  for (std::size_t r = 0; r < prompts.size(); ++r)
    out_at[r + 1] = out_at[r] + std::size_t(prompts[r].patterns) * prompts[r].queries;
  // Groups of whole prompts of at most k_rows rows (one prompt alone may exceed it), each one
  // forward from the embedding (probabilities_group).
  constexpr std::size_t k_rows = 4096;
  std::size_t r0 = 0;
  while (r0 < prompts.size()) {
    std::size_t r1 = r0, rows = 0;
    auto rows_of = [&](const DevicePrompt& p) {
      return std::size_t(p.patterns) * std::size_t(used_length(p, queries));
    };
    while (r1 < prompts.size() && (r1 == r0 || rows + rows_of(prompts[r1]) <= k_rows))
      rows += rows_of(prompts[r1++]);
    if (rows > 0) {  // prompts without patterns or queries need nothing
      StackedRows g;
      g.layer_has.assign(static_cast<std::size_t>(L), 0);
      std::vector<int> seq_at(static_cast<std::size_t>(patterns), -1), used(prompts.size(), 0);
      for (std::size_t r = r0; r < r1; ++r) {
        const auto& p = prompts[r];
        used[r] = used_length(p, queries);
        for (int b = 0; b < p.patterns && used[r] > 0; ++b) {
          const int at = static_cast<int>(g.tok.size());
          seq_at[p.pattern0 + b] = at;
          for (int j = 0; j < used[r]; ++j) {
            g.tok.push_back(tokens[p.offset + j]);
            g.pos.push_back(j);
            g.first.push_back(at);
          }
          for (int q = p.query0; q < p.query0 + p.queries; ++q) {
            g.qrow.push_back(at + queries[static_cast<std::size_t>(q)].position);
            g.target.push_back(queries[static_cast<std::size_t>(q)].target);
          }
        }
      }
      for (const auto& iv : ivs)  // in call order; those after the last query change nothing
        if (seq_at[iv.pattern] >= 0 && iv.position < used[owner[iv.pattern]]) {
          g.ivs.push_back({iv.layer, seq_at[iv.pattern] + iv.position, iv.unit, iv.op, iv.value});
          g.layer_has[static_cast<std::size_t>(iv.layer)] = 1;
        }
      m.probabilities_group(g, out + out_at[r0]);
    }
    r0 = r1;
  }
}

void DecoderEngine::Impl::probabilities_group(const StackedRows& g, float* out) {
  auto& m = *this;
  const int L = m.s.n_layer, d = m.s.d_model, F = m.s.ffn;
  const int R = static_cast<int>(g.tok.size()), Q = static_cast<int>(g.qrow.size());
  int max_kv = 0;
  for (const int p : g.pos) max_kv = std::max(max_kv, p + 1);
  const Buffer dtok = upload_ints(g.tok, "tokens"), dpos = upload_ints(g.pos, "positions"),
               dzero = upload_ints(std::vector<int>(g.tok.size(), 0), "starts"),
               dfirst = upload_ints(g.first, "row indices"), dq = upload_ints(g.qrow, "query rows"),
               dtarget = upload_ints(g.target, "targets");
  Buffer div;
  if (!g.ivs.empty()) {
    div.allocate(g.ivs.size() * sizeof(RowIntervention), "interventions");
    check(cudaMemcpy(div.raw(), g.ivs.data(), g.ivs.size() * sizeof(RowIntervention),
                     cudaMemcpyHostToDevice),
          "copy interventions");
  }
  const std::size_t rd = std::size_t(R) * d, rf = std::size_t(R) * F;
  Buffer h(rd, "hidden states"), mid(rd, "residual stream"), pre(rf, "pre"), post(rf, "post");
  m.embed_rows(dtok.i(), R, 1, h.f(), dpos.i());
  for (int l = 0; l < L; ++l) {
    LayerCache c;
    m.attention_forward(l, R, h.f(), dpos.i(), dzero.i(), dfirst.i(), max_kv, nullptr, nullptr, c,
                        false, mid.f());
    m.ffn_pre(l, R, mid.f(), c, pre.f(), post.f());
    float* site = m.site_of(pre.f(), post.f());
    if (g.layer_has[static_cast<std::size_t>(l)]) {
      intervene_rows_kernel<<<1, 1>>>(site, static_cast<const RowIntervention*>(div.raw()),
                                      static_cast<int>(g.ivs.size()), l, F);
      check(cudaGetLastError(), "intervene_rows_kernel");
      if (site != post.f()) m.act_forward(pre.f(), post.f(), rf);
    }
    m.ffn_post(l, R, post.f(), mid.f(), h.f(), nullptr);
  }
  Buffer hq(std::size_t(Q) * d, "query hidden states"), x(std::size_t(Q) * d, "final hidden");
  m.gather(h.f(), dq, Q, d, hq.f());
  Buffer mean, rstd;
  m.norm(hq.f(), m.final_g, m.final_b, Q, d, x.f(), &mean, rstd);
  Buffer prob(std::size_t(Q), "probabilities");
  m.head_probabilities(x.f(), dtarget.i(), Q, prob.f());
  // The group's outputs are contiguous: its prompts in order, each [patterns × queries].
  m.to_host(out, prob.f(), std::size_t(Q), "copy probabilities");
}

void DecoderEngine::mean_site_activations(const std::int32_t* tokens, int count, int n,
                                          const int* positions, int npos, float* out) {
  auto& m = *impl_;
  check(cudaSetDevice(m.device), "cudaSetDevice");
  if (count <= 0 || n <= 0) throw ArgumentError("mean_site_activations: no prompts");
  m.check_length(n);
  for (std::size_t i = 0; i < std::size_t(count) * n; ++i) m.check_token(tokens[i]);
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
    m.embed_rows(tok.i(), R, n, h.f());
    for (int l = 0; l < L; ++l) {
      LayerCache lc;
      m.attention_forward(l, R, h.f(), dpos.i(), dzero.i(), dfirst.i(), n, nullptr, nullptr, lc,
                          false, mid.f());
      m.ffn_pre(l, R, mid.f(), lc, pre.f(), post.f());
      mean_rows_kernel<<<blocks_for(per_layer), k_threads>>>(
          m.site_of(pre.f(), post.f()), dpositions.i(), npos, c, n, F,
          1.0f / static_cast<float>(count), sums.f() + std::size_t(l) * per_layer);
      check(cudaGetLastError(), "mean_rows_kernel");
      if (l + 1 < L) m.ffn_post(l, R, post.f(), mid.f(), h.f(), nullptr);
    }
  }
  m.to_host(out, sums.f(), per_layer * L, "copy mean activations");
}

void DecoderEngine::value_column(int layer, int unit, float* out) const {
  const auto& m = *impl_;
  if (layer < 0 || layer >= m.s.n_layer || unit < 0 || unit >= m.s.ffn)
    throw ArgumentError("value_column: (layer " + std::to_string(layer) + ", unit " +
                        std::to_string(unit) + ") outside the model");
  check(
      cudaMemcpy2D(out, sizeof(float), m.layers[static_cast<std::size_t>(layer)].w_down.f() + unit,
                   std::size_t(m.s.ffn) * sizeof(float), sizeof(float), m.s.d_model,
                   cudaMemcpyDeviceToHost),
      "copy value vector");
}

void DecoderEngine::set_value_column(int layer, int unit, const float* v) {
  auto& m = *impl_;
  if (layer < 0 || layer >= m.s.n_layer || unit < 0 || unit >= m.s.ffn)
    throw ArgumentError("set_value_column: (layer " + std::to_string(layer) + ", unit " +
                        std::to_string(unit) + ") outside the model");
  check(cudaMemcpy2D(m.layers[static_cast<std::size_t>(layer)].w_down.f() + unit,
                     std::size_t(m.s.ffn) * sizeof(float), v, sizeof(float), sizeof(float),
                     m.s.d_model, cudaMemcpyHostToDevice),
        "copy value vector");
  m.bf16_weights.erase(m.layers[static_cast<std::size_t>(layer)].w_down.f());
}

void DecoderEngine::embedding_row(std::int32_t id, float* out) const {
  const auto& m = *impl_;
  m.check_token(id);
  check(cudaMemcpy(out, m.embed.f() + std::size_t(id) * m.s.d_model, m.s.d_model * sizeof(float),
                   cudaMemcpyDeviceToHost),
        "copy embedding row");
}

}  // namespace knprobe::cuda
