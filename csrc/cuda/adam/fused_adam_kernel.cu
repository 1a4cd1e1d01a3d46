// Multi-tensor fused Adam/AdamW: the element update the family's multi-tensor kernel
// (cuda_multi_tensor.cuh) runs; fp32 math whatever the storage type; optional grad scale and skip flag.
#include "cuda_fused_adam.h"
#include "cuda_multi_tensor.cuh"

namespace accelops {
namespace {

struct AdamUpdate {
    using Hyper = AdamHyper;
    static constexpr int kStates = 2;     // exp_avg, exp_avg_sq
    static constexpr int kLists = kAdamLists;

    AdamHyper h;
    float step_size;    // lr / bias_correction1
    float bc2_sqrt;     // sqrt(bias_correction2)
    float grad_scale;   // grads are divided by this

    __device__ static bool skip(const AdamHyper& hyper) {
        return hyper.found_inf != nullptr && *hyper.found_inf != 0.f;
    }

    __device__ AdamUpdate(const AdamHyper& hyper, const AdamTable& tab, int t)
        : h(hyper), step_size(hyper.lr), bc2_sqrt(1.f),
          grad_scale(hyper.grad_scale != nullptr ? *hyper.grad_scale : 1.f) {
        if (h.bias_correction) {
            const float step = *static_cast<const float*>(tab.ptr[kAdamStep][t]);
            step_size = h.lr / (1.f - powf(h.beta1, step));
            bc2_sqrt = sqrtf(1.f - powf(h.beta2, step));
        }
    }

    __device__ __forceinline__ void operator()(float& p, float g, float (&state)[kStates]) const {
        float& m = state[0];
        float& v = state[1];
        g = g / grad_scale;
        if (h.weight_decay != 0.f) {
            if (h.adam_w_mode) {
                p -= h.lr * h.weight_decay * p;
            } else {
                g += h.weight_decay * p;
            }
        }
        m = h.beta1 * m + (1.f - h.beta1) * g;
        v = h.beta2 * v + (1.f - h.beta2) * g * g;
        const float denom = sqrtf(v) / bc2_sqrt + h.eps;
        p -= step_size * m / denom;
    }
};

}  // namespace

cudaError_t launch_fused_adam(int param_dtype, int state_dtype, const AdamTable& table,
                              const AdamHyper& hyper, cudaStream_t stream) {
    return launch_multi_tensor<AdamUpdate>(param_dtype, state_dtype, table, hyper, stream);
}

}  // namespace accelops
