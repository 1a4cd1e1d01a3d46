// Device helpers shared by the accelops CUDA kernels: warp size, warp/row sums, packed loads.
// Light on purpose (no ATen); hipifies to HIP with torch.utils.hipify.
#pragma once

#include <cuda_runtime.h>
#include <cstdint>

#include "cuda_dtype_codes.h"

namespace accelops {

#if defined(USE_ROCM)
constexpr int kWarpSize = 64;
#else
constexpr int kWarpSize = 32;
#endif

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int m = kWarpSize / 2; m > 0; m >>= 1) {
#if defined(USE_ROCM)
        v += __shfl_xor(v, m);
#else
        v += __shfl_xor_sync(0xffffffffu, v, m);
#endif
    }
    return v;
}

// Sums a and b over the threadIdx.x dimension of the block (one row per threadIdx.y); every
// thread of that row gets the totals. All threads of the block must call it.
// scratch: shared memory of at least 2 * blockDim.y * (blockDim.x / kWarpSize) floats.
__device__ __forceinline__ void row_sum2(float& a, float& b, float* scratch) {
    a = warp_sum(a);
    b = warp_sum(b);
    const int warps = blockDim.x / kWarpSize;
    if (warps == 1) return;
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    float* mine = scratch + 2 * threadIdx.y * warps;
    __syncthreads();  // earlier readers of scratch are done
    if (lane == 0) {
        mine[2 * warp] = a;
        mine[2 * warp + 1] = b;
    }
    __syncthreads();
    a = 0.f;
    b = 0.f;
    for (int i = 0; i < warps; ++i) {
        a += mine[2 * i];
        b += mine[2 * i + 1];
    }
}

// VEC elements of T loaded or stored with one aligned access.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
    T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ void load_floats(const T* base, int64_t vec_index, float (&out)[VEC]) {
    const Pack<T, VEC> pk = reinterpret_cast<const Pack<T, VEC>*>(base)[vec_index];
#pragma unroll
    for (int j = 0; j < VEC; ++j) out[j] = static_cast<float>(pk.v[j]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_floats(T* base, int64_t vec_index, const float (&in)[VEC]) {
    Pack<T, VEC> pk;
#pragma unroll
    for (int j = 0; j < VEC; ++j) pk.v[j] = static_cast<T>(in[j]);
    reinterpret_cast<Pack<T, VEC>*>(base)[vec_index] = pk;
}

}  // namespace accelops
