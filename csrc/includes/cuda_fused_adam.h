// Host/device interface of the multi-tensor fused Adam kernel: its launch table (cuda_multi_tensor.h),
// the hyperparameters as the kernel takes them and the launcher the .cu file defines. No ATen here, so
// the kernel file builds fast.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda_multi_tensor.h"

namespace accelops {

// Per tensor: param, grad, exp_avg, exp_avg_sq, and its step count (already incremented; one float).
enum AdamList : int { kAdamExpAvg = kFirstStateList, kAdamExpAvgSq, kAdamStep, kAdamLists };
using AdamTable = MultiTensorTable<kAdamLists>;
using AdamEntry = MultiTensorEntry<kAdamLists>;

struct AdamHyper {
    float lr, beta1, beta2, eps, weight_decay;
    int adam_w_mode;                      // 1: decoupled decay (AdamW), 0: L2 added to the grad
    int bias_correction;
    const float* grad_scale;              // optional: grads are divided by *grad_scale
    const float* found_inf;               // optional: when *found_inf != 0 nothing is updated
};

static_assert(fits_kernel_arguments<kAdamLists, AdamHyper>(), "kernel arguments too large");

// Launches one step over the table; param_dtype/state_dtype are DTypeCode values
// (state is either fp32 or the param dtype). Returns the launch status.
cudaError_t launch_fused_adam(int param_dtype, int state_dtype, const AdamTable& table,
                              const AdamHyper& hyper, cudaStream_t stream);

}  // namespace accelops
