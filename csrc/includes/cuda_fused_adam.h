// Host/device interface of the multi-tensor fused Adam kernel: the launch table, how it is filled
// (shared by the binding and the host emulation in tests/cuda_emu) and the launcher the .cu file
// defines. No ATen here, so the kernel file builds fast.
#pragma once

#include <cuda_runtime_api.h>
#include <climits>
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

// One tensor of a step, as fill_adam_tables takes it (device pointers).
struct AdamTensor {
    void* param;
    const void* grad;
    void* exp_avg;
    void* exp_avg_sq;
    const float* step;
    int64_t numel;
};

// The largest tensor a table can hold: its chunk indices must fit AdamTable::chunk.
constexpr int64_t kAdamMaxNumel = static_cast<int64_t>(INT32_MAX) * kAdamChunk;
constexpr int kAdamTooLarge = -1;   // fill_adam_tables' result when a tensor is over kAdamMaxNumel

// Splits `count` tensors of one (param, state) dtype pair into launch tables of at most
// kAdamMaxTensors tensors and max_blocks chunks, in order (a tensor may span tables), and calls
// launch(table) for each. Returns 0, the first nonzero launch result (nothing more is launched),
// or kAdamTooLarge without launching anything. Empty tensors are skipped. A max_blocks below
// kAdamMaxBlocks is for tests: it splits tables without tensors of 2560 chunks.
template <typename LaunchFn>
int fill_adam_tables(const AdamTensor* tensors, size_t count, LaunchFn&& launch, int max_blocks = kAdamMaxBlocks) {
    for (size_t i = 0; i < count; ++i) {
        if (tensors[i].numel > kAdamMaxNumel) return kAdamTooLarge;
    }
    if (max_blocks < 1 || max_blocks > kAdamMaxBlocks) max_blocks = kAdamMaxBlocks;
    AdamTable tab{};
    int err = 0;
    auto flush = [&]() {
        err = static_cast<int>(launch(static_cast<const AdamTable&>(tab)));
        tab.num_tensors = 0;
        tab.num_blocks = 0;
        return err == 0;
    };
    auto add_tensor = [&](const AdamTensor& a) {
        const int k = tab.num_tensors++;
        tab.param[k] = a.param;
        tab.grad[k] = a.grad;
        tab.exp_avg[k] = a.exp_avg;
        tab.exp_avg_sq[k] = a.exp_avg_sq;
        tab.step[k] = a.step;
        tab.numel[k] = a.numel;
    };
    for (size_t i = 0; i < count; ++i) {
        const AdamTensor& a = tensors[i];
        if (a.numel <= 0) continue;
        if (tab.num_tensors == kAdamMaxTensors && !flush()) return err;
        add_tensor(a);
        const int64_t chunks = (a.numel + kAdamChunk - 1) / kAdamChunk;
        for (int64_t c = 0; c < chunks; ++c) {
            if (tab.num_blocks == max_blocks) {   // the tensor goes on in the next table
                if (!flush()) return err;
                add_tensor(a);
            }
            tab.tensor[tab.num_blocks] = static_cast<uint8_t>(tab.num_tensors - 1);
            tab.chunk[tab.num_blocks] = static_cast<int32_t>(c);
            ++tab.num_blocks;
        }
    }
    if (tab.num_blocks > 0) flush();
    return err;
}

// Launches one step over the table; param_dtype/state_dtype are DTypeCode values
// (state is either fp32 or the param dtype). Returns the launch status.
cudaError_t launch_fused_adam(int param_dtype, int state_dtype, const AdamTable& table,
                              const AdamHyper& hyper, cudaStream_t stream);

}  // namespace accelops
