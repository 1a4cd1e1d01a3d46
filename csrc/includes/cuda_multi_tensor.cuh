// The multi-tensor kernel of the fused optimizers and its launcher, written once: one block per
// 64K-element chunk of any tensor in the launch table (cuda_multi_tensor.h), 16-byte vector accesses
// where every pointer allows them and a scalar tail, fp32 math whatever the storage type, 64-bit offsets.
// An optimizer brings only its element update, a type with:
//
//   using Hyper = ...;                   its hyperparameters, passed by value to the kernel
//   static constexpr int kStates;        its element-wise state lists (after param and grad)
//   static constexpr int kLists;         all lists of its table (states, then per-tensor extras)
//   __device__ static bool skip(const Hyper&);          true: the launch updates nothing (e.g. found_inf)
//   __device__ Update(const Hyper&, const MultiTensorTable<kLists>&, int tensor);   per block
//   __device__ void operator()(float& p, float g, float (&state)[kStates]) const;   one element
//
// and its launcher calls launch_multi_tensor<Update>(...). Included by kernel (.cu) files only.
// 16-bit storage types: torch's header-only Half/BFloat16, the very types (and conversions) that
// c10/util/Half.h and BFloat16.h re-export; header-only, so the TORCH_STABLE_ONLY build takes them.
#pragma once

#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <cstdint>

#include "cuda_compat.cuh"
#include "cuda_multi_tensor.h"

namespace accelops {

template <typename T, int VEC>
__device__ __forceinline__ bool aligned_for(const void* ptr) {
    return (reinterpret_cast<uintptr_t>(ptr) % (VEC * sizeof(T))) == 0;
}

template <typename P, typename S, typename Update>
__global__ void __launch_bounds__(kMultiTensorThreads)
    multi_tensor_kernel(const MultiTensorTable<Update::kLists> tab, const typename Update::Hyper h) {
    constexpr int kStates = Update::kStates;
    if (Update::skip(h)) return;
    const int t = tab.tensor[blockIdx.x];
    const int64_t start = static_cast<int64_t>(tab.chunk[blockIdx.x]) * kMultiTensorChunk;
    const int64_t remaining = tab.numel[t] - start;
    const int len = static_cast<int>(remaining < kMultiTensorChunk ? remaining : kMultiTensorChunk);
    P* __restrict__ p = static_cast<P*>(tab.ptr[kParamList][t]) + start;
    const P* __restrict__ g = static_cast<const P*>(tab.ptr[kGradList][t]) + start;
    S* __restrict__ s[kStates];
#pragma unroll
    for (int k = 0; k < kStates; ++k) s[k] = static_cast<S*>(tab.ptr[kFirstStateList + k][t]) + start;
    const Update update(h, tab, t);

    // 16-byte param/grad accesses: 4 fp32 or 8 16-bit elements per thread and iteration.
    constexpr int VEC = sizeof(P) == 2 ? 8 : 4;
    bool aligned = aligned_for<P, VEC>(p) && aligned_for<P, VEC>(g);
#pragma unroll
    for (int k = 0; k < kStates; ++k) aligned = aligned && aligned_for<S, VEC>(s[k]);
    int first_scalar = 0;
    if (aligned) {
        const int nvec = len / VEC;
        for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
            float pf[VEC], gf[VEC], sf[kStates][VEC];
            load_floats<P, VEC>(p, i, pf);
            load_floats<P, VEC>(g, i, gf);
#pragma unroll
            for (int k = 0; k < kStates; ++k) load_floats<S, VEC>(s[k], i, sf[k]);
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                float state[kStates];
#pragma unroll
                for (int k = 0; k < kStates; ++k) state[k] = sf[k][j];
                update(pf[j], gf[j], state);
#pragma unroll
                for (int k = 0; k < kStates; ++k) sf[k][j] = state[k];
            }
            store_floats<P, VEC>(p, i, pf);
#pragma unroll
            for (int k = 0; k < kStates; ++k) store_floats<S, VEC>(s[k], i, sf[k]);
        }
        first_scalar = nvec * VEC;
    }
    for (int i = first_scalar + threadIdx.x; i < len; i += blockDim.x) {
        float pf = static_cast<float>(p[i]);
        float state[kStates];
#pragma unroll
        for (int k = 0; k < kStates; ++k) state[k] = static_cast<float>(s[k][i]);
        update(pf, static_cast<float>(g[i]), state);
        p[i] = static_cast<P>(pf);
#pragma unroll
        for (int k = 0; k < kStates; ++k) s[k][i] = static_cast<S>(state[k]);
    }
}

template <typename P, typename S, typename Update>
cudaError_t launch_multi_tensor_typed(const MultiTensorTable<Update::kLists>& tab, const typename Update::Hyper& h,
                                      cudaStream_t stream) {
    multi_tensor_kernel<P, S, Update><<<tab.num_blocks, kMultiTensorThreads, 0, stream>>>(tab, h);
    return cudaGetLastError();
}

// Launches Update over the table for its storage types; param_dtype/state_dtype are DTypeCode values
// (state is either fp32 or the param dtype). Returns the launch status.
template <typename Update>
cudaError_t launch_multi_tensor(int param_dtype, int state_dtype, const MultiTensorTable<Update::kLists>& table,
                                const typename Update::Hyper& hyper, cudaStream_t stream) {
    using torch::headeronly::BFloat16;
    using torch::headeronly::Half;
    if (table.num_blocks == 0) return cudaSuccess;
    const bool f32_state = state_dtype == kF32;
    switch (param_dtype) {
        case kF32:
            return launch_multi_tensor_typed<float, float, Update>(table, hyper, stream);
        case kF16:
            return f32_state ? launch_multi_tensor_typed<Half, float, Update>(table, hyper, stream)
                             : launch_multi_tensor_typed<Half, Half, Update>(table, hyper, stream);
        case kBF16:
            return f32_state ? launch_multi_tensor_typed<BFloat16, float, Update>(table, hyper, stream)
                             : launch_multi_tensor_typed<BFloat16, BFloat16, Update>(table, hyper, stream);
        default:
            return cudaErrorInvalidValue;
    }
}

}  // namespace accelops
