// Host/device interface of the multi-tensor fused Adam kernel: the launch table the binding
// fills and the launcher the .cu file defines. No ATen here, so the kernel file builds fast.
#pragma once

#include <cuda_runtime_api.h>
#include <cstddef>
#include <cstdint>

namespace accelops {

// One launch covers up to kAdamMaxTensors tensors and kAdamMaxBlocks chunks. CUDA 12.1+ takes up to
// 32 KB of kernel arguments (several waves of blocks per launch); HIP keeps to the classic 4 KB.
#if defined(USE_ROCM)
constexpr int kAdamMaxTensors = 32;
constexpr int kAdamMaxBlocks = 448;
constexpr size_t kAdamMaxArgBytes = 4000;
#else
constexpr int kAdamMaxTensors = 128;
constexpr int kAdamMaxBlocks = 2560;
constexpr size_t kAdamMaxArgBytes = 32000;
#endif
constexpr int64_t kAdamChunk = 65536;     // elements per block
constexpr int kAdamThreads = 512;

// Passed by value as a kernel argument: tensor pointers plus a block -> (tensor, chunk) map.
struct AdamTable {
    void* param[kAdamMaxTensors];
    const void* grad[kAdamMaxTensors];
    void* exp_avg[kAdamMaxTensors];
    void* exp_avg_sq[kAdamMaxTensors];
    const float* step[kAdamMaxTensors];   // per-tensor step count (already incremented), device
    int64_t numel[kAdamMaxTensors];
    int32_t chunk[kAdamMaxBlocks];        // chunk index inside its tensor (64-bit offsets)
    uint8_t tensor[kAdamMaxBlocks];       // index into the arrays above
    int num_tensors;
    int num_blocks;
};

struct AdamHyper {
    float lr, beta1, beta2, eps, weight_decay;
    int adam_w_mode;                      // 1: decoupled decay (AdamW), 0: L2 added to the grad
    int bias_correction;
    const float* grad_scale;              // optional: grads are divided by *grad_scale
    const float* found_inf;               // optional: when *found_inf != 0 nothing is updated
};

static_assert(sizeof(AdamTable) + sizeof(AdamHyper) <= kAdamMaxArgBytes, "kernel arguments too large");

// Launches one step over the table; param_dtype/state_dtype are DTypeCode values
// (state is either fp32 or the param dtype). Returns the launch status.
cudaError_t launch_fused_adam(int param_dtype, int state_dtype, const AdamTable& table,
                              const AdamHyper& hyper, cudaStream_t stream);

}  // namespace accelops
