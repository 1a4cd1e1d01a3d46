// Fused residual-add + layer norm, forward and backward. Each row is handled by bx threads
// (by rows per block, grid-stride over rows). Rows up to 512 * ITEMS vectors stay in registers;
// longer rows are streamed, so any row size works:
//   forward: one pass computes s = x + r and the row's mean/variance (Welford), a second pass
//     (re-reading s, often from L2) writes y;
//   backward: a row kernel sums dy * w and dy * w * xhat per row; a column-tiled kernel then
//     writes dx and sums grad_weight/grad_bias partials over its rows, reading dy and s once more.
// The cached backward accumulates grad_weight/grad_bias partials per block in registers.
// Partials are fp32 and summed by a final kernel.
// 16-bit storage types: torch's header-only Half/BFloat16, the very types (and conversions) that
// c10/util/Half.h and BFloat16.h re-export; header-only, so the TORCH_STABLE_ONLY build takes them.
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "cuda_compat.cuh"
#include "cuda_layer_norm.h"

namespace accelops {
namespace {

using torch::headeronly::BFloat16;
using torch::headeronly::Half;

constexpr int kMaxThreads = 512;   // threads per block of the row kernels
constexpr int kFwdItems = 4;       // vectors per thread a cached forward row holds
// Vectors per thread of a cached backward row: it also holds per-column grad_weight/grad_bias
// accumulators, so 16-bit rows (8 elements per vector) keep one to stay near 64 registers.
constexpr int bwd_items(int elem_size, int vec) { return elem_size == 2 && vec > 1 ? 1 : 2; }
constexpr int kColThreadsX = 32;   // column kernels: 32 columns (vectors) x 8 row lanes
constexpr int kColThreadsY = 8;
constexpr int kColThreads = kColThreadsX * kColThreadsY;

template <typename T>
struct FwdArgs {
    const T* x;
    const T* r;   // residual or nullptr
    T* s;         // x + r, written when r is given
    T* y;
    const T* w;
    const T* b;
    float* mean;
    float* rstd;
    int64_t rows;
    int n;
    float eps;
};

template <typename T>
struct BwdArgs {
    const T* dy;
    const T* s;
    const float* mean;
    const float* rstd;
    const T* w;
    T* dx;
    float* part_w;   // [parts, n]
    float* part_b;
    float* row_sg;   // [rows]: sum of dy * w per row (streamed rows only)
    float* row_sgx;  // [rows]: sum of dy * w * xhat per row (streamed rows only)
    int64_t rows;
    int n;
};

// Loads x (+ r, rounded to T as torch's x + r is, and stored to s) as floats.
template <typename T, int VEC>
__device__ __forceinline__ void load_input(const T* x, const T* r, T* s, int64_t vi, float (&v)[VEC]) {
    load_floats<T, VEC>(x, vi, v);
    if (r == nullptr) return;
    float rv[VEC];
    load_floats<T, VEC>(r, vi, rv);
    Pack<T, VEC> pk;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
        pk.v[j] = static_cast<T>(v[j] + rv[j]);
        v[j] = static_cast<float>(pk.v[j]);
    }
    reinterpret_cast<Pack<T, VEC>*>(s)[vi] = pk;
}

// The row's first element of x + r, rounded as s is. Sums are taken relative to it, so the mean of a
// row far from zero keeps its fp32 accuracy.
template <typename T>
__device__ __forceinline__ float row_shift(const T* x, const T* r) {
    const float x0 = static_cast<float>(x[0]);
    return r == nullptr ? x0 : static_cast<float>(static_cast<T>(x0 + static_cast<float>(r[0])));
}

template <typename T, int VEC>
__device__ __forceinline__ void store_normalized(const FwdArgs<T>& a, T* y, int64_t vi, const float (&v)[VEC],
                                                 float mean, float rstd) {
    float w[VEC], b[VEC], out[VEC];
    load_floats<T, VEC>(a.w, vi, w);
    load_floats<T, VEC>(a.b, vi, b);
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = (v[j] - mean) * rstd * w[j] + b[j];
    store_floats<T, VEC>(y, vi, out);
}

template <typename T, int VEC, bool CACHED>
__global__ void __launch_bounds__(kMaxThreads) add_ln_fwd_kernel(const FwdArgs<T> a) {
    __shared__ float scratch[2 * kMaxThreads / kWarpSize];
    const int nvec = a.n / VEC;
    const float inv_n = 1.f / static_cast<float>(a.n);
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.y; base < a.rows; base += stride) {
        const int64_t row = base + threadIdx.y;
        const bool valid = row < a.rows;
        const int64_t off = valid ? row * a.n : 0;
        const T* x = a.x + off;
        const T* r = a.r != nullptr ? a.r + off : nullptr;
        T* s = a.r != nullptr ? a.s + off : nullptr;
        T* y = a.y + off;
        const float shift = row_shift(x, r);
        float sum = 0.f, sq = 0.f, unused = 0.f;
        float mean, rstd;
        if constexpr (CACHED) {
            float v[kFwdItems][VEC];
#pragma unroll
            for (int k = 0; k < kFwdItems; ++k) {
                const int vi = threadIdx.x + k * blockDim.x;
                if (valid && vi < nvec) {
                    load_input<T, VEC>(x, r, s, vi, v[k]);
#pragma unroll
                    for (int j = 0; j < VEC; ++j) sum += v[k][j] - shift;
                }
            }
            row_sum2(sum, unused, scratch);
            mean = shift + sum * inv_n;
#pragma unroll
            for (int k = 0; k < kFwdItems; ++k) {
                const int vi = threadIdx.x + k * blockDim.x;
                if (valid && vi < nvec) {
#pragma unroll
                    for (int j = 0; j < VEC; ++j) sq += (v[k][j] - mean) * (v[k][j] - mean);
                }
            }
            row_sum2(sq, unused, scratch);
            rstd = rsqrtf(sq * inv_n + a.eps);
#pragma unroll
            for (int k = 0; k < kFwdItems; ++k) {
                const int vi = threadIdx.x + k * blockDim.x;
                if (valid && vi < nvec) store_normalized<T, VEC>(a, y, vi, v[k], mean, rstd);
            }
        } else {
            // One read of the inputs: this thread's count, mean (relative to the shift) and M2 (sum of
            // squared deviations), merged a vector at a time (Chan et al.), then combined over the row.
            float cnt = 0.f, m = 0.f, m2 = 0.f, v[VEC];
            for (int vi = threadIdx.x; valid && vi < nvec; vi += blockDim.x) {
                load_input<T, VEC>(x, r, s, vi, v);
                float vm = 0.f, vm2 = 0.f;
#pragma unroll
                for (int j = 0; j < VEC; ++j) vm += v[j] - shift;
                vm *= 1.f / VEC;
#pragma unroll
                for (int j = 0; j < VEC; ++j) vm2 += (v[j] - shift - vm) * (v[j] - shift - vm);
                const float total = cnt + VEC;
                const float delta = vm - m;
                m += delta * (VEC / total);
                m2 += vm2 + delta * delta * (cnt * VEC / total);
                cnt = total;
            }
            sum = cnt * m;
            row_sum2(sum, unused, scratch);
            const float shifted_mean = sum * inv_n;
            mean = shift + shifted_mean;
            sq = m2 + cnt * (m - shifted_mean) * (m - shifted_mean);
            row_sum2(sq, unused, scratch);
            rstd = rsqrtf(sq * inv_n + a.eps);
            const T* src = r != nullptr ? s : x;   // this thread re-reads what it wrote
            for (int vi = threadIdx.x; valid && vi < nvec; vi += blockDim.x) {
                load_floats<T, VEC>(src, vi, v);
                store_normalized<T, VEC>(a, y, vi, v, mean, rstd);
            }
        }
        if (valid && threadIdx.x == 0) {
            a.mean[row] = mean;
            a.rstd[row] = rstd;
        }
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w, xhat = (s - mean) * rstd.
// Rows held in registers; grad_weight/grad_bias partials of this block go to row blockIdx.x.
template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxThreads) ln_bwd_cached_kernel(const BwdArgs<T> a) {
    constexpr int kBwdItems = bwd_items(sizeof(T), VEC);
    __shared__ float scratch[kMaxThreads];
    const int nvec = a.n / VEC;
    const float inv_n = 1.f / static_cast<float>(a.n);
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
    float acc_w[kBwdItems][VEC] = {};
    float acc_b[kBwdItems][VEC] = {};
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.y; base < a.rows; base += stride) {
        const int64_t row = base + threadIdx.y;
        const bool valid = row < a.rows;
        const int64_t off = valid ? row * a.n : 0;
        const float mean = valid ? a.mean[row] : 0.f;
        const float rstd = valid ? a.rstd[row] : 0.f;
        const T* dy = a.dy + off;
        const T* s = a.s + off;
        T* dx = a.dx + off;
        float sg = 0.f, sgx = 0.f;
        float xh[kBwdItems][VEC], d[kBwdItems][VEC];
#pragma unroll
        for (int k = 0; k < kBwdItems; ++k) {
            const int vi = threadIdx.x + k * blockDim.x;
            if (valid && vi < nvec) {
                float w[VEC];
                load_floats<T, VEC>(dy, vi, d[k]);
                load_floats<T, VEC>(s, vi, xh[k]);
                load_floats<T, VEC>(a.w, vi, w);
#pragma unroll
                for (int j = 0; j < VEC; ++j) {
                    xh[k][j] = (xh[k][j] - mean) * rstd;
                    const float g = d[k][j] * w[j];
                    sg += g;
                    sgx += g * xh[k][j];
                    acc_w[k][j] += d[k][j] * xh[k][j];
                    acc_b[k][j] += d[k][j];
                }
            }
        }
        row_sum2(sg, sgx, scratch);
#pragma unroll
        for (int k = 0; k < kBwdItems; ++k) {
            const int vi = threadIdx.x + k * blockDim.x;
            if (valid && vi < nvec) {
                float w[VEC], out[VEC];
                load_floats<T, VEC>(a.w, vi, w);
#pragma unroll
                for (int j = 0; j < VEC; ++j) {
                    out[j] = rstd * (d[k][j] * w[j] - (sg + xh[k][j] * sgx) * inv_n);
                }
                store_floats<T, VEC>(dx, vi, out);
            }
        }
    }
    // Sum this block's per-thread column partials over threadIdx.y into row blockIdx.x.
    __syncthreads();   // scratch is free again
    const int lane = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
    for (int k = 0; k < kBwdItems; ++k) {
        const int vi = threadIdx.x + k * blockDim.x;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
            for (int which = 0; which < 2; ++which) {
                scratch[lane] = which == 0 ? acc_w[k][j] : acc_b[k][j];
                __syncthreads();
                if (threadIdx.y == 0 && vi < nvec) {
                    float t = 0.f;
                    for (int yy = 0; yy < blockDim.y; ++yy) t += scratch[yy * blockDim.x + threadIdx.x];
                    float* part = which == 0 ? a.part_w : a.part_b;
                    part[static_cast<int64_t>(blockIdx.x) * a.n + static_cast<int64_t>(vi) * VEC + j] = t;
                }
                __syncthreads();
            }
        }
    }
}

// Streamed rows, first kernel: per row, sg = sum(dy * w) and sgx = sum(dy * w * xhat).
template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxThreads) ln_bwd_row_sums_kernel(const BwdArgs<T> a) {
    __shared__ float scratch[2 * kMaxThreads / kWarpSize];
    const int nvec = a.n / VEC;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.y; base < a.rows; base += stride) {
        const int64_t row = base + threadIdx.y;
        const bool valid = row < a.rows;
        const int64_t off = valid ? row * a.n : 0;
        const float mean = valid ? a.mean[row] : 0.f;
        const float rstd = valid ? a.rstd[row] : 0.f;
        float sg = 0.f, sgx = 0.f, d[VEC], xh[VEC], w[VEC];
        for (int vi = threadIdx.x; valid && vi < nvec; vi += blockDim.x) {
            load_floats<T, VEC>(a.dy + off, vi, d);
            load_floats<T, VEC>(a.s + off, vi, xh);
            load_floats<T, VEC>(a.w, vi, w);
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const float g = d[j] * w[j];
                sg += g;
                sgx += g * (xh[j] - mean) * rstd;
            }
        }
        row_sum2(sg, sgx, scratch);
        if (valid && threadIdx.x == 0) {
            a.row_sg[row] = sg;
            a.row_sgx[row] = sgx;
        }
    }
}

// Streamed rows, second kernel: thread (x, y) of block (c, part) handles vector column
// c * kColThreadsX + x of every kColThreadsY-th row of the part's row range. It writes dx and sums
// the column's grad_weight/grad_bias terms; the block's sums go to partial row blockIdx.y.
template <typename T, int VEC>
__global__ void __launch_bounds__(kColThreads) ln_bwd_columns_kernel(const BwdArgs<T> a, int64_t rows_per_part) {
    constexpr int kTileCols = kColThreadsX * VEC;
    __shared__ float sw[kColThreadsY][kTileCols];
    __shared__ float sb[kColThreadsY][kTileCols];
    const int nvec = a.n / VEC;
    const int vi = blockIdx.x * kColThreadsX + threadIdx.x;
    const float inv_n = 1.f / static_cast<float>(a.n);
    const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_part;
    const int64_t r1 = r0 + rows_per_part < a.rows ? r0 + rows_per_part : a.rows;
    const T* __restrict__ dy = a.dy;
    const T* __restrict__ s = a.s;
    T* __restrict__ dx = a.dx;
    float acc_w[VEC] = {}, acc_b[VEC] = {};
    if (vi < nvec) {
        float w[VEC], d[VEC], xh[VEC], out[VEC];
        load_floats<T, VEC>(a.w, vi, w);
        for (int64_t r = r0 + threadIdx.y; r < r1; r += kColThreadsY) {
            const int64_t off = r * a.n;
            const float mean = a.mean[r], rstd = a.rstd[r], sg = a.row_sg[r], sgx = a.row_sgx[r];
            load_floats<T, VEC>(dy + off, vi, d);
            load_floats<T, VEC>(s + off, vi, xh);
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                xh[j] = (xh[j] - mean) * rstd;
                out[j] = rstd * (d[j] * w[j] - (sg + xh[j] * sgx) * inv_n);
                acc_w[j] += d[j] * xh[j];
                acc_b[j] += d[j];
            }
            store_floats<T, VEC>(dx + off, vi, out);
        }
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
        sw[threadIdx.y][threadIdx.x * VEC + j] = acc_w[j];
        sb[threadIdx.y][threadIdx.x * VEC + j] = acc_b[j];
    }
    __syncthreads();
    const int64_t tile0 = static_cast<int64_t>(blockIdx.x) * kTileCols;
    for (int c = threadIdx.y * kColThreadsX + threadIdx.x; c < kTileCols; c += kColThreads) {
        if (tile0 + c >= a.n) break;
        float gw = 0.f, gb = 0.f;
        for (int yy = 0; yy < kColThreadsY; ++yy) {
            gw += sw[yy][c];
            gb += sb[yy][c];
        }
        a.part_w[static_cast<int64_t>(blockIdx.y) * a.n + tile0 + c] = gw;
        a.part_b[static_cast<int64_t>(blockIdx.y) * a.n + tile0 + c] = gb;
    }
}

// grad_weight/grad_bias = column sums of the fp32 partials, stored in T.
template <typename T>
__global__ void ln_param_finalize_kernel(const float* part_w, const float* part_b, int parts, int n, T* gw_out,
                                         T* gb_out) {
    __shared__ float sw[kColThreadsY][kColThreadsX + 1];
    __shared__ float sb[kColThreadsY][kColThreadsX + 1];
    const int64_t col = static_cast<int64_t>(blockIdx.x) * kColThreadsX + threadIdx.x;
    float gw = 0.f, gb = 0.f;
    if (col < n) {
        for (int p = threadIdx.y; p < parts; p += kColThreadsY) {
            gw += part_w[static_cast<int64_t>(p) * n + col];
            gb += part_b[static_cast<int64_t>(p) * n + col];
        }
    }
    sw[threadIdx.y][threadIdx.x] = gw;
    sb[threadIdx.y][threadIdx.x] = gb;
    __syncthreads();
    if (threadIdx.y == 0 && col < n) {
        for (int yy = 1; yy < kColThreadsY; ++yy) {
            gw += sw[yy][threadIdx.x];
            gb += sb[yy][threadIdx.x];
        }
        gw_out[col] = static_cast<T>(gw);
        gb_out[col] = static_cast<T>(gb);
    }
}

template <typename T, int VEC>
void launch_fwd_rows(const LnPlan& p, const FwdArgs<T>& a, cudaStream_t stream) {
    const dim3 block(p.bx, p.by);
    if (p.cached) {
        add_ln_fwd_kernel<T, VEC, true><<<p.grid, block, 0, stream>>>(a);
    } else {
        add_ln_fwd_kernel<T, VEC, false><<<p.grid, block, 0, stream>>>(a);
    }
}

template <typename T, int VEC>
void launch_bwd_rows(const LnPlan& p, const BwdArgs<T>& a, cudaStream_t stream) {
    const dim3 block(p.bx, p.by);
    if (p.cached) {
        ln_bwd_cached_kernel<T, VEC><<<p.grid, block, 0, stream>>>(a);
        return;
    }
    ln_bwd_row_sums_kernel<T, VEC><<<p.grid, block, 0, stream>>>(a);
    const int col_tiles = (a.n / VEC + kColThreadsX - 1) / kColThreadsX;
    const int64_t rows_per_part = (a.rows + p.parts - 1) / p.parts;
    ln_bwd_columns_kernel<T, VEC><<<dim3(col_tiles, p.parts), dim3(kColThreadsX, kColThreadsY), 0, stream>>>(
        a, rows_per_part);
}

template <typename T>
cudaError_t fwd_typed(const LnPlan& p, const FwdArgs<T>& a, cudaStream_t stream) {
    constexpr int kVec = 16 / sizeof(T);
    if (p.vec == kVec) {
        launch_fwd_rows<T, kVec>(p, a, stream);
    } else {
        launch_fwd_rows<T, 1>(p, a, stream);
    }
    return cudaGetLastError();
}

template <typename T>
cudaError_t bwd_typed(const LnPlan& p, const BwdArgs<T>& a, T* gw, T* gb, cudaStream_t stream) {
    constexpr int kVec = 16 / sizeof(T);
    if (p.vec == kVec) {
        launch_bwd_rows<T, kVec>(p, a, stream);
    } else {
        launch_bwd_rows<T, 1>(p, a, stream);
    }
    const int col_blocks = (a.n + kColThreadsX - 1) / kColThreadsX;
    ln_param_finalize_kernel<T><<<col_blocks, dim3(kColThreadsX, kColThreadsY), 0, stream>>>(
        a.part_w, a.part_b, p.parts, a.n, gw, gb);
    return cudaGetLastError();
}

int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Row ranges of the streamed backward's column kernel: about two waves of blocks (4 of its 256-thread
// blocks fit an SM at 64 registers), at least one row per row lane (kColThreadsY per part), and at
// most 1024 parts.
int column_parts(int64_t rows, int nvec, int sm_count) {
    const int64_t col_tiles = (nvec + kColThreadsX - 1) / kColThreadsX;
    const int64_t target_blocks = static_cast<int64_t>(sm_count > 0 ? sm_count : 1) * 8;
    int64_t parts = (target_blocks + col_tiles - 1) / col_tiles;
    const int64_t lane_filling = (rows + kColThreadsY - 1) / kColThreadsY;
    if (parts > lane_filling) parts = lane_filling;
    if (parts > 1024) parts = 1024;
    return static_cast<int>(parts < 1 ? 1 : parts);
}

}  // namespace

LnPlan plan_layer_norm(int elem_size, bool aligned, int64_t rows, int n, int sm_count, bool backward) {
    LnPlan p{};
    const int vec16 = 16 / elem_size;
    p.vec = (aligned && n % vec16 == 0) ? vec16 : 1;
    const int nvec = n / p.vec;
    const int items = backward ? bwd_items(elem_size, p.vec) : kFwdItems;
    const int need = (nvec + items - 1) / items;
    p.cached = need <= kMaxThreads;
    p.bx = p.cached ? round_up(need < 1 ? 1 : need, kWarpSize) : kMaxThreads;
    if (p.bx > kMaxThreads) p.bx = kMaxThreads;
    p.by = 256 / p.bx > 1 ? 256 / p.bx : 1;
    const int64_t groups = (rows + p.by - 1) / p.by;
    const int per_sm_threads = backward && p.cached ? 1024 : 2048;   // the cached backward needs registers
    const int per_sm = per_sm_threads / (p.bx * p.by) > 1 ? per_sm_threads / (p.bx * p.by) : 1;
    const int64_t cap = static_cast<int64_t>(sm_count > 0 ? sm_count : 1) * per_sm;
    p.grid = static_cast<int>(groups < cap ? (groups > 0 ? groups : 1) : cap);
    p.parts = p.cached ? p.grid : column_parts(rows, nvec, sm_count);
    return p;
}

int64_t layer_norm_bwd_workspace_floats(const LnPlan& plan, int64_t rows, int n) {
    return 2 * static_cast<int64_t>(plan.parts) * n + (plan.cached ? 0 : 2 * rows);
}

cudaError_t launch_add_layer_norm_fwd(int dtype, const LnPlan& plan, const void* x, const void* residual,
                                      void* s, void* y, const void* weight, const void* bias, float* mean,
                                      float* rstd, int64_t rows, int n, float eps, cudaStream_t stream) {
    switch (dtype) {
#define ACCELOPS_LN_FWD_CASE(code, T)                                                                    \
    case code:                                                                                           \
        return fwd_typed<T>(plan,                                                                        \
                            FwdArgs<T>{static_cast<const T*>(x), static_cast<const T*>(residual),        \
                                       static_cast<T*>(s), static_cast<T*>(y),                           \
                                       static_cast<const T*>(weight), static_cast<const T*>(bias), mean, \
                                       rstd, rows, n, eps},                                              \
                            stream);
        ACCELOPS_LN_FWD_CASE(kF32, float)
        ACCELOPS_LN_FWD_CASE(kF16, Half)
        ACCELOPS_LN_FWD_CASE(kBF16, BFloat16)
#undef ACCELOPS_LN_FWD_CASE
        default:
            return cudaErrorInvalidValue;
    }
}

cudaError_t launch_layer_norm_bwd(int dtype, const LnPlan& plan, const void* grad_y, const void* input,
                                  const float* mean, const float* rstd, const void* weight,
                                  void* grad_input, void* grad_weight, void* grad_bias, float* workspace,
                                  int64_t rows, int n, cudaStream_t stream) {
    float* part_w = workspace;
    float* part_b = part_w + static_cast<int64_t>(plan.parts) * n;
    float* row_sg = part_b + static_cast<int64_t>(plan.parts) * n;   // streamed rows only
    float* row_sgx = row_sg + rows;
    switch (dtype) {
#define ACCELOPS_LN_BWD_CASE(code, T)                                                                        \
    case code:                                                                                               \
        return bwd_typed<T>(plan,                                                                            \
                            BwdArgs<T>{static_cast<const T*>(grad_y), static_cast<const T*>(input), mean,    \
                                       rstd, static_cast<const T*>(weight), static_cast<T*>(grad_input),     \
                                       part_w, part_b, row_sg, row_sgx, rows, n},                            \
                            static_cast<T*>(grad_weight), static_cast<T*>(grad_bias), stream);
        ACCELOPS_LN_BWD_CASE(kF32, float)
        ACCELOPS_LN_BWD_CASE(kF16, Half)
        ACCELOPS_LN_BWD_CASE(kBF16, BFloat16)
#undef ACCELOPS_LN_BWD_CASE
        default:
            return cudaErrorInvalidValue;
    }
}

}  // namespace accelops
