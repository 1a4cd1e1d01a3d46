// MoE dispatch/combine kernels: gathers only (every output row is written by one block), so no atomics and
// results do not depend on the launch shape. One block per row (grid-stride over rows), its threads over the
// row's elements; float32 arithmetic, one rounding to the storage type. The gate gradient of a buffer row is
// a block sum of its dot product (warp sums, then one shared-memory pass).
// 16-bit storage types: torch's header-only Half/BFloat16 (as the layer norm kernels use).
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "cuda_compat.cuh"
#include "cuda_moe_dispatch.h"

namespace accelops {
namespace {

using torch::headeronly::BFloat16;
using torch::headeronly::Half;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

int blocks_for(int64_t rows) { return static_cast<int>(rows < kMaxBlocks ? (rows > 0 ? rows : 1) : kMaxBlocks); }

__global__ void build_source_kernel(const int32_t* expert, const int32_t* slot, int64_t routes, int64_t capacity,
                                    int64_t rows, int32_t* source) {
    for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < routes; r += int64_t(gridDim.x) * blockDim.x) {
        const int64_t e = expert[r], c = slot[r];
        if (e < 0 || c < 0 || c >= capacity) continue;
        const int64_t row = e * capacity + c;
        if (row < rows) source[row] = static_cast<int32_t>(r);
    }
}

template <typename T>
__global__ void dispatch_kernel(const T* x, const int32_t* source, const float* weight, T* buffer, int64_t rows,
                                int64_t tokens, int64_t m) {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        T* dst = buffer + row * m;
        const int32_t r = source[row];
        if (r < 0) {
            for (int64_t i = threadIdx.x; i < m; i += blockDim.x) dst[i] = static_cast<T>(0.f);
            continue;
        }
        const T* src = x + (int64_t(r) % tokens) * m;
        if (weight == nullptr) {
            for (int64_t i = threadIdx.x; i < m; i += blockDim.x) dst[i] = src[i];
        } else {
            const float w = weight[r];
            for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
                dst[i] = static_cast<T>(static_cast<float>(src[i]) * w);
            }
        }
    }
}

template <typename T>
__global__ void combine_kernel(const T* y, const int32_t* expert, const int32_t* slot, const float* weight, T* out,
                               int64_t k, int64_t tokens, int64_t num_experts, int64_t capacity, int64_t m) {
    for (int64_t s = blockIdx.x; s < tokens; s += gridDim.x) {
        for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
            float acc = 0.f;
            for (int64_t j = 0; j < k; ++j) {  // fixed route order, as the torch reference adds
                const int64_t r = j * tokens + s;
                const int64_t e = expert[r], c = slot[r];
                if (e < 0 || e >= num_experts || c < 0 || c >= capacity) continue;
                const float v = static_cast<float>(y[(e * capacity + c) * m + i]);
                acc = __fadd_rn(acc, weight == nullptr ? v : __fmul_rn(v, weight[r]));
            }
            out[s * m + i] = static_cast<T>(acc);
        }
    }
}

template <typename T>
__global__ void combine_bwd_kernel(const T* grad_out, const T* y, const int32_t* source, const float* gate,
                                   T* grad_y, float* grad_gate, int64_t rows, int64_t tokens, int64_t m) {
    __shared__ float partial[kThreads / kWarpSize];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        T* dst = grad_y + row * m;
        const int32_t r = source[row];  // uniform over the block
        if (r < 0) {
            for (int64_t i = threadIdx.x; i < m; i += blockDim.x) dst[i] = static_cast<T>(0.f);
            continue;
        }
        const T* g = grad_out + (int64_t(r) % tokens) * m;
        const T* yr = y + row * m;
        const float w = gate[r];
        float dot = 0.f;
        for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
            const float gv = static_cast<float>(g[i]);
            dst[i] = static_cast<T>(__fmul_rn(gv, w));
            dot = fmaf(gv, static_cast<float>(yr[i]), dot);
        }
        dot = warp_sum(dot);
        const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
        if (lane == 0) partial[warp] = dot;
        __syncthreads();
        if (threadIdx.x == 0) {
            float total = 0.f;
            for (int i = 0; i < static_cast<int>(blockDim.x) / kWarpSize; ++i) total += partial[i];
            grad_gate[r] = total;
        }
        __syncthreads();  // partial is reused by the next row
    }
}

}  // namespace

cudaError_t launch_moe_build_source(const int32_t* expert, const int32_t* slot, int64_t routes, int64_t capacity,
                                    int64_t rows, int32_t* source, cudaStream_t stream) {
    if (rows > 0) {
        const cudaError_t err = cudaMemsetAsync(source, 0xff, sizeof(int32_t) * rows, stream);  // every row -1
        if (err != cudaSuccess) return err;
    }
    if (routes > 0) {
        const int64_t blocks = (routes + kThreads - 1) / kThreads;
        build_source_kernel<<<blocks_for(blocks), kThreads, 0, stream>>>(expert, slot, routes, capacity, rows, source);
    }
    return cudaGetLastError();
}

#define ACCELOPS_MOE_DTYPES(CASE) \
    CASE(kF32, float)             \
    CASE(kF16, Half)              \
    CASE(kBF16, BFloat16)

cudaError_t launch_moe_dispatch(int dtype, const void* x, const int32_t* source, const float* weight, void* buffer,
                                int64_t rows, int64_t tokens, int64_t m, cudaStream_t stream) {
    if (rows == 0 || m == 0) return cudaSuccess;
    switch (dtype) {
#define ACCELOPS_MOE_CASE(code, T)                                                                       \
    case code:                                                                                           \
        dispatch_kernel<T><<<blocks_for(rows), kThreads, 0, stream>>>(                                   \
            static_cast<const T*>(x), source, weight, static_cast<T*>(buffer), rows, tokens, m);         \
        return cudaGetLastError();
        ACCELOPS_MOE_DTYPES(ACCELOPS_MOE_CASE)
#undef ACCELOPS_MOE_CASE
        default:
            return cudaErrorInvalidValue;
    }
}

cudaError_t launch_moe_combine(int dtype, const void* y, const int32_t* expert, const int32_t* slot,
                               const float* weight, void* out, int64_t k, int64_t tokens, int64_t num_experts,
                               int64_t capacity, int64_t m, cudaStream_t stream) {
    if (tokens == 0 || m == 0) return cudaSuccess;
    switch (dtype) {
#define ACCELOPS_MOE_CASE(code, T)                                                                        \
    case code:                                                                                            \
        combine_kernel<T><<<blocks_for(tokens), kThreads, 0, stream>>>(                                   \
            static_cast<const T*>(y), expert, slot, weight, static_cast<T*>(out), k, tokens, num_experts, \
            capacity, m);                                                                                 \
        return cudaGetLastError();
        ACCELOPS_MOE_DTYPES(ACCELOPS_MOE_CASE)
#undef ACCELOPS_MOE_CASE
        default:
            return cudaErrorInvalidValue;
    }
}

cudaError_t launch_moe_combine_bwd(int dtype, const void* grad_out, const void* y, const int32_t* source,
                                   const float* gate, void* grad_y, float* grad_gate, int64_t rows, int64_t tokens,
                                   int64_t m, cudaStream_t stream) {
    if (rows == 0) return cudaSuccess;
    switch (dtype) {
#define ACCELOPS_MOE_CASE(code, T)                                                                          \
    case code:                                                                                              \
        combine_bwd_kernel<T><<<blocks_for(rows), kThreads, 0, stream>>>(                                   \
            static_cast<const T*>(grad_out), static_cast<const T*>(y), source, gate, static_cast<T*>(grad_y), \
            grad_gate, rows, tokens, m);                                                                    \
        return cudaGetLastError();
        ACCELOPS_MOE_DTYPES(ACCELOPS_MOE_CASE)
#undef ACCELOPS_MOE_CASE
        default:
            return cudaErrorInvalidValue;
    }
}

}  // namespace accelops
