// Multi-tensor fused Adam/AdamW: one block per 64K-element chunk of any tensor in the launch
// table; fp32 math whatever the storage type; 64-bit offsets; optional grad scale and skip flag.
// 16-bit storage types: torch's header-only Half/BFloat16, the very types (and conversions) that
// c10/util/Half.h and BFloat16.h re-export; header-only, so the TORCH_STABLE_ONLY build takes them.
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "cuda_compat.cuh"
#include "cuda_fused_adam.h"

namespace accelops {
namespace {

using torch::headeronly::BFloat16;
using torch::headeronly::Half;

struct AdamScalars {
    float step_size;   // lr / bias_correction1
    float bc2_sqrt;    // sqrt(bias_correction2)
    float grad_scale;      // grads are divided by this
};

__device__ __forceinline__ void adam_update(float& p, float g, float& m, float& v,
                                            const AdamHyper& h, const AdamScalars& s) {
    g = g / s.grad_scale;
    if (h.weight_decay != 0.f) {
        if (h.adam_w_mode) {
            p -= h.lr * h.weight_decay * p;
        } else {
            g += h.weight_decay * p;
        }
    }
    m = h.beta1 * m + (1.f - h.beta1) * g;
    v = h.beta2 * v + (1.f - h.beta2) * g * g;
    const float denom = sqrtf(v) / s.bc2_sqrt + h.eps;
    p -= s.step_size * m / denom;
}

template <typename T, int VEC>
__device__ __forceinline__ bool aligned_for(const void* ptr) {
    return (reinterpret_cast<uintptr_t>(ptr) % (VEC * sizeof(T))) == 0;
}

template <typename P, typename S>
__global__ void __launch_bounds__(kAdamThreads) fused_adam_kernel(const AdamTable tab, const AdamHyper h) {
    if (h.found_inf != nullptr && *h.found_inf != 0.f) return;
    const int t = tab.tensor[blockIdx.x];
    const int64_t start = static_cast<int64_t>(tab.chunk[blockIdx.x]) * kAdamChunk;
    const int64_t remaining = tab.numel[t] - start;
    const int len = static_cast<int>(remaining < kAdamChunk ? remaining : kAdamChunk);
    P* __restrict__ p = static_cast<P*>(tab.param[t]) + start;
    const P* __restrict__ g = static_cast<const P*>(tab.grad[t]) + start;
    S* __restrict__ m = static_cast<S*>(tab.exp_avg[t]) + start;
    S* __restrict__ v = static_cast<S*>(tab.exp_avg_sq[t]) + start;

    AdamScalars s{h.lr, 1.f, h.grad_scale != nullptr ? *h.grad_scale : 1.f};
    if (h.bias_correction) {
        const float step = *tab.step[t];
        s.step_size = h.lr / (1.f - powf(h.beta1, step));
        s.bc2_sqrt = sqrtf(1.f - powf(h.beta2, step));
    }

    // 16-byte param/grad accesses: 4 fp32 or 8 16-bit elements per thread and iteration.
    constexpr int VEC = sizeof(P) == 2 ? 8 : 4;
    int first_scalar = 0;
    if (aligned_for<P, VEC>(p) && aligned_for<P, VEC>(g) && aligned_for<S, VEC>(m) && aligned_for<S, VEC>(v)) {
        const int nvec = len / VEC;
        for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
            float pf[VEC], gf[VEC], mf[VEC], vf[VEC];
            load_floats<P, VEC>(p, i, pf);
            load_floats<P, VEC>(g, i, gf);
            load_floats<S, VEC>(m, i, mf);
            load_floats<S, VEC>(v, i, vf);
#pragma unroll
            for (int j = 0; j < VEC; ++j) adam_update(pf[j], gf[j], mf[j], vf[j], h, s);
            store_floats<P, VEC>(p, i, pf);
            store_floats<S, VEC>(m, i, mf);
            store_floats<S, VEC>(v, i, vf);
        }
        first_scalar = nvec * VEC;
    }
    for (int i = first_scalar + threadIdx.x; i < len; i += blockDim.x) {
        float pf = static_cast<float>(p[i]);
        float mf = static_cast<float>(m[i]);
        float vf = static_cast<float>(v[i]);
        adam_update(pf, static_cast<float>(g[i]), mf, vf, h, s);
        p[i] = static_cast<P>(pf);
        m[i] = static_cast<S>(mf);
        v[i] = static_cast<S>(vf);
    }
}

template <typename P, typename S>
cudaError_t launch_typed(const AdamTable& tab, const AdamHyper& h, cudaStream_t stream) {
    fused_adam_kernel<P, S><<<tab.num_blocks, kAdamThreads, 0, stream>>>(tab, h);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_fused_adam(int param_dtype, int state_dtype, const AdamTable& table,
                              const AdamHyper& hyper, cudaStream_t stream) {
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
