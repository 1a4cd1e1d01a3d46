// Multi-tensor fused Lion: the element update the family's multi-tensor kernel (cuda_multi_tensor.cuh)
// runs; fp32 math whatever the storage type, each product and sum rounded on its own (built with
// --fmad=false, as the torch path computes) and one rounding per stored result.
//   c = beta1 * m + (1 - beta1) * g;  p = p * (1 - lr * wd) - lr * sign(c);  m = beta2 * m + (1 - beta2) * g
// sign is torch.sign's: 0 for c == 0 and for NaN.
#include "cuda_fused_lion.h"
#include "cuda_multi_tensor.cuh"

namespace accelops {
namespace {

struct LionUpdate {
    using Hyper = LionHyper;
    static constexpr int kStates = 1;     // exp_avg
    static constexpr int kLists = kLionLists;

    LionHyper h;

    __device__ static bool skip(const LionHyper&) { return false; }

    __device__ LionUpdate(const LionHyper& hyper, const LionTable&, int) : h(hyper) {}

    __device__ __forceinline__ void operator()(float& p, float g, float (&state)[kStates]) const {
        float& m = state[0];
        const float c = h.beta1 * m + h.one_minus_beta1 * g;
        const float sign = static_cast<float>((c > 0.f) - (c < 0.f));
        p = p * h.decay - h.lr * sign;
        m = h.beta2 * m + h.one_minus_beta2 * g;
    }
};

}  // namespace

cudaError_t launch_fused_lion(int param_dtype, int state_dtype, const LionTable& table, const LionHyper& hyper,
                              cudaStream_t stream) {
    return launch_multi_tensor<LionUpdate>(param_dtype, state_dtype, table, hyper, stream);
}

}  // namespace accelops
