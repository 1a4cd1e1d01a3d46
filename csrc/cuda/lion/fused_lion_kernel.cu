// Multi-tensor fused Lion: one block per 64K-element chunk of any tensor in the launch table; fp32
// math whatever the storage type, each product and sum rounded on its own (built with --fmad=false,
// as the torch path computes) and one rounding per stored result; 64-bit offsets.
//   c = beta1 * m + (1 - beta1) * g;  p = p * (1 - lr * wd) - lr * sign(c);  m = beta2 * m + (1 - beta2) * g
// sign is torch.sign's: 0 for c == 0 and for NaN.
// 16-bit storage types: torch's header-only Half/BFloat16, the very types (and conversions) that
// c10/util/Half.h and BFloat16.h re-export; header-only, so the TORCH_STABLE_ONLY build takes them.
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "cuda_compat.cuh"
#include "cuda_fused_lion.h"

namespace accelops {
namespace {

using torch::headeronly::BFloat16;
using torch::headeronly::Half;

__device__ __forceinline__ void lion_update(float& p, float g, float& m, const LionHyper& h) {
    const float c = h.beta1 * m + h.one_minus_beta1 * g;
    const float sign = static_cast<float>((c > 0.f) - (c < 0.f));
    p = p * h.decay - h.lr * sign;
    m = h.beta2 * m + h.one_minus_beta2 * g;
}

template <typename T, int VEC>
__device__ __forceinline__ bool aligned_for(const void* ptr) {
    return (reinterpret_cast<uintptr_t>(ptr) % (VEC * sizeof(T))) == 0;
}

template <typename P, typename S>
__global__ void __launch_bounds__(kLionThreads) fused_lion_kernel(const LionTable tab, const LionHyper h) {
    const int t = tab.tensor[blockIdx.x];
    const int64_t start = static_cast<int64_t>(tab.chunk[blockIdx.x]) * kLionChunk;
    const int64_t remaining = tab.numel[t] - start;
    const int len = static_cast<int>(remaining < kLionChunk ? remaining : kLionChunk);
    P* __restrict__ p = static_cast<P*>(tab.param[t]) + start;
    const P* __restrict__ g = static_cast<const P*>(tab.grad[t]) + start;
    S* __restrict__ m = static_cast<S*>(tab.exp_avg[t]) + start;

    // 16-byte param/grad accesses: 4 fp32 or 8 16-bit elements per thread and iteration.
    constexpr int VEC = sizeof(P) == 2 ? 8 : 4;
    int first_scalar = 0;
    if (aligned_for<P, VEC>(p) && aligned_for<P, VEC>(g) && aligned_for<S, VEC>(m)) {
        const int nvec = len / VEC;
        for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
            float pf[VEC], gf[VEC], mf[VEC];
            load_floats<P, VEC>(p, i, pf);
            load_floats<P, VEC>(g, i, gf);
            load_floats<S, VEC>(m, i, mf);
#pragma unroll
            for (int j = 0; j < VEC; ++j) lion_update(pf[j], gf[j], mf[j], h);
            store_floats<P, VEC>(p, i, pf);
            store_floats<S, VEC>(m, i, mf);
        }
        first_scalar = nvec * VEC;
    }
    for (int i = first_scalar + threadIdx.x; i < len; i += blockDim.x) {
        float pf = static_cast<float>(p[i]);
        float mf = static_cast<float>(m[i]);
        lion_update(pf, static_cast<float>(g[i]), mf, h);
        p[i] = static_cast<P>(pf);
        m[i] = static_cast<S>(mf);
    }
}

template <typename P, typename S>
cudaError_t launch_typed(const LionTable& tab, const LionHyper& h, cudaStream_t stream) {
    fused_lion_kernel<P, S><<<tab.num_blocks, kLionThreads, 0, stream>>>(tab, h);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fused_lion(int param_dtype, int state_dtype, const LionTable& table, const LionHyper& hyper,
                              cudaStream_t stream) {
    if (table.num_blocks == 0) return cudaSuccess;
    const bool f32_state = state_dtype == kF32;
    switch (param_dtype) {
        case kF32:
            return launch_typed<float, float>(table, hyper, stream);
        case kF16:
            return f32_state ? launch_typed<Half, float>(table, hyper, stream)
                             : launch_typed<Half, Half>(table, hyper, stream);
        case kBF16:
            return f32_state ? launch_typed<BFloat16, float>(table, hyper, stream)
                             : launch_typed<BFloat16, BFloat16>(table, hyper, stream);
        default:
            return cudaErrorInvalidValue;
    }
}

}  // namespace accelops
