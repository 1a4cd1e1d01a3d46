// Host/device interface of the multi-tensor fused Lion kernel: the launch table, how it is filled
// (shared by the binding and the host emulation in tests/cuda_emu), the hyperparameters as the kernel
// takes them and the launcher the .cu file defines. No ATen here, so the kernel file builds fast.
// The table layout and its filling follow cuda_fused_adam.h, with Lion's three tensors per param.
#pragma once

#include <cuda_runtime_api.h>
#include <climits>
#include <cstddef>
#include <cstdint>

namespace accelops {

// One launch covers up to kLionMaxTensors tensors and kLionMaxBlocks chunks. CUDA 12.1+ takes up to
// 32 KB of kernel arguments (several waves of blocks per launch); HIP keeps to the classic 4 KB.
#if defined(USE_ROCM)
constexpr int kLionMaxTensors = 32;
constexpr int kLionMaxBlocks = 448;
constexpr size_t kLionMaxArgBytes = 4000;
#else
constexpr int kLionMaxTensors = 128;
constexpr int kLionMaxBlocks = 2560;
constexpr size_t kLionMaxArgBytes = 32000;
#endif
constexpr int64_t kLionChunk = 65536;     // elements per block
constexpr int kLionThreads = 512;

// Passed by value as a kernel argument: tensor pointers plus a block -> (tensor, chunk) map.
struct LionTable {
    void* param[kLionMaxTensors];
    const void* grad[kLionMaxTensors];
    void* exp_avg[kLionMaxTensors];
    int64_t numel[kLionMaxTensors];
    int32_t chunk[kLionMaxBlocks];        // chunk index inside its tensor (64-bit offsets)
    uint8_t tensor[kLionMaxBlocks];       // index into the arrays above
    int num_tensors;
    int num_blocks;
};

// The step's scalars, each rounded once to float from its double value (as torch does with the
// Python floats of the reference): see lion_hyper.
struct LionHyper {
    float lr;
    float decay;                          // 1 - lr * weight_decay; exactly 1 when weight_decay is 0
    float beta1, one_minus_beta1;
    float beta2, one_minus_beta2;
};

static_assert(sizeof(LionTable) + sizeof(LionHyper) <= kLionMaxArgBytes, "kernel arguments too large");

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

// One tensor of a step, as fill_lion_tables takes it (device pointers).
struct LionTensor {
    void* param;
    const void* grad;
    void* exp_avg;
    int64_t numel;
};

// The largest tensor a table can hold: its chunk indices must fit LionTable::chunk.
constexpr int64_t kLionMaxNumel = static_cast<int64_t>(INT32_MAX) * kLionChunk;
constexpr int kLionTooLarge = -1;   // fill_lion_tables' result when a tensor is over kLionMaxNumel

// Splits `count` tensors of one (param, state) dtype pair into launch tables of at most
// kLionMaxTensors tensors and max_blocks chunks, in order (a tensor may span tables), and calls
// launch(table) for each. Returns 0, the first nonzero launch result (nothing more is launched),
// or kLionTooLarge without launching anything. Empty tensors are skipped. A max_blocks below
// kLionMaxBlocks is for tests: it splits tables without tensors of 2560 chunks.
template <typename LaunchFn>
int fill_lion_tables(const LionTensor* tensors, size_t count, LaunchFn&& launch, int max_blocks = kLionMaxBlocks) {
    for (size_t i = 0; i < count; ++i) {
        if (tensors[i].numel > kLionMaxNumel) return kLionTooLarge;
    }
    if (max_blocks < 1 || max_blocks > kLionMaxBlocks) max_blocks = kLionMaxBlocks;
    LionTable tab{};
    int err = 0;
    auto flush = [&]() {
        err = static_cast<int>(launch(static_cast<const LionTable&>(tab)));
        tab.num_tensors = 0;
        tab.num_blocks = 0;
        return err == 0;
    };
    auto add_tensor = [&](const LionTensor& a) {
        const int k = tab.num_tensors++;
        tab.param[k] = a.param;
        tab.grad[k] = a.grad;
        tab.exp_avg[k] = a.exp_avg;
        tab.numel[k] = a.numel;
    };
    for (size_t i = 0; i < count; ++i) {
        const LionTensor& a = tensors[i];
        if (a.numel <= 0) continue;
        if (tab.num_tensors == kLionMaxTensors && !flush()) return err;
        add_tensor(a);
        const int64_t chunks = (a.numel + kLionChunk - 1) / kLionChunk;
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

// Launches one Lion step over the table; param_dtype/state_dtype are DTypeCode values (the state
// is either fp32 or the param dtype). Returns the launch status.
cudaError_t launch_fused_lion(int param_dtype, int state_dtype, const LionTable& table, const LionHyper& hyper,
                              cudaStream_t stream);

}  // namespace accelops
