// Host/device interface of the multi-tensor fused Lion kernel: its launch table (cuda_multi_tensor.h),
// the hyperparameters as the kernel takes them and the launcher the .cu file defines. No ATen here, so
// the kernel file builds fast.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda_multi_tensor.h"

namespace accelops {

// Per tensor: param, grad, exp_avg.
enum LionList : int { kLionExpAvg = kFirstStateList, kLionLists };
using LionTable = MultiTensorTable<kLionLists>;
using LionEntry = MultiTensorEntry<kLionLists>;

// The step's scalars, each rounded once to float from its double value (as torch does with the
// Python floats of the reference): see lion_hyper.
struct LionHyper {
    float lr;
    float decay;                          // 1 - lr * weight_decay; exactly 1 when weight_decay is 0
    float beta1, one_minus_beta1;
    float beta2, one_minus_beta2;
};

static_assert(fits_kernel_arguments<kLionLists, LionHyper>(), "kernel arguments too large");

inline LionHyper lion_hyper(double lr, double beta1, double beta2, double weight_decay) {
    LionHyper h{};
    h.lr = static_cast<float>(lr);
    h.decay = weight_decay != 0.0 ? static_cast<float>(1.0 - lr * weight_decay) : 1.f;  // no inf * 0
    h.beta1 = static_cast<float>(beta1);
    h.one_minus_beta1 = static_cast<float>(1.0 - beta1);
    h.beta2 = static_cast<float>(beta2);
    h.one_minus_beta2 = static_cast<float>(1.0 - beta2);
    return h;
}

// Launches one Lion step over the table; param_dtype/state_dtype are DTypeCode values (the state
// is either fp32 or the param dtype). Returns the launch status.
cudaError_t launch_fused_lion(int param_dtype, int state_dtype, const LionTable& table, const LionHyper& hyper,
                              cudaStream_t stream);

}  // namespace accelops
