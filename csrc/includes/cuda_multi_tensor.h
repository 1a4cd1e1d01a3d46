// The launch table of the multi-tensor (fused optimizer) kernels and how it is filled, shared by the
// bindings, the kernels and the host emulation in tests/cuda_emu. No ATen here, so kernel files build fast.
//
// A table holds up to kMultiTensorMaxTensors tensors and kMultiTensorMaxBlocks blocks, one block per
// kMultiTensorChunk elements of a tensor. Each tensor brings kLists pointers, in the op's order:
// param, grad, its state tensors (element-wise, as many elements as the param), then per-tensor extras
// (e.g. Adam's step count). A fused optimizer declares its table as MultiTensorTable<kLists>.
#pragma once

#include <cuda_runtime_api.h>
#include <climits>
#include <cstddef>
#include <cstdint>

namespace accelops {

// CUDA 12.1+ takes up to 32 KB of kernel arguments (several waves of blocks per launch); HIP keeps to the
// classic 4 KB.
#if defined(USE_ROCM)
constexpr int kMultiTensorMaxTensors = 32;
constexpr int kMultiTensorMaxBlocks = 448;
constexpr size_t kMultiTensorMaxArgBytes = 4000;
#else
constexpr int kMultiTensorMaxTensors = 128;
constexpr int kMultiTensorMaxBlocks = 2560;
constexpr size_t kMultiTensorMaxArgBytes = 32000;
#endif
constexpr int64_t kMultiTensorChunk = 65536;   // elements per block
constexpr int kMultiTensorThreads = 512;

// List positions every fused optimizer shares; its state lists follow, then its extras.
enum MultiTensorList : int { kParamList = 0, kGradList = 1, kFirstStateList = 2 };

// Passed by value as a kernel argument: tensor pointers plus a block -> (tensor, chunk) map. Read-only
// lists (grads, extras) are stored without const; the kernels never write them.
template <int kLists>
struct MultiTensorTable {
    void* ptr[kLists][kMultiTensorMaxTensors];
    int64_t numel[kMultiTensorMaxTensors];
    int32_t chunk[kMultiTensorMaxBlocks];      // chunk index inside its tensor (64-bit offsets)
    uint8_t tensor[kMultiTensorMaxBlocks];     // index into the arrays above
    int num_tensors;
    int num_blocks;
};

// The kernel arguments (table and the op's hyperparameters) fit what one launch may take.
template <int kLists, typename Hyper>
constexpr bool fits_kernel_arguments() {
    return sizeof(MultiTensorTable<kLists>) + sizeof(Hyper) <= kMultiTensorMaxArgBytes;
}

// One tensor of a step, as fill_multi_tensor_tables takes it (device pointers, in the table's list order).
template <int kLists>
struct MultiTensorEntry {
    void* ptr[kLists];
    int64_t numel;
};

// The largest tensor a table can hold: its chunk indices must fit MultiTensorTable::chunk.
constexpr int64_t kMultiTensorMaxNumel = static_cast<int64_t>(INT32_MAX) * kMultiTensorChunk;
constexpr int kMultiTensorTooLarge = -1;   // fill_multi_tensor_tables' result for a tensor over that

// Splits `count` tensors of one (param, state) dtype pair into launch tables of at most
// kMultiTensorMaxTensors tensors and max_blocks chunks, in order (a tensor may span tables), and calls
// launch(table) for each. Returns 0, the first nonzero launch result (nothing more is launched), or
// kMultiTensorTooLarge without launching anything. Empty tensors are skipped. A max_blocks below
// kMultiTensorMaxBlocks is for tests: it splits tables without tensors of 2560 chunks.
template <int kLists, typename LaunchFn>
int fill_multi_tensor_tables(const MultiTensorEntry<kLists>* tensors, size_t count, LaunchFn&& launch,
                             int max_blocks = kMultiTensorMaxBlocks) {
    for (size_t i = 0; i < count; ++i) {
        if (tensors[i].numel > kMultiTensorMaxNumel) return kMultiTensorTooLarge;
    }
    if (max_blocks < 1 || max_blocks > kMultiTensorMaxBlocks) max_blocks = kMultiTensorMaxBlocks;
    MultiTensorTable<kLists> tab{};
    int err = 0;
    auto flush = [&]() {
        err = static_cast<int>(launch(static_cast<const MultiTensorTable<kLists>&>(tab)));
        tab.num_tensors = 0;
        tab.num_blocks = 0;
        return err == 0;
    };
    auto add_tensor = [&](const MultiTensorEntry<kLists>& a) {
        const int k = tab.num_tensors++;
        for (int l = 0; l < kLists; ++l) tab.ptr[l][k] = a.ptr[l];
        tab.numel[k] = a.numel;
    };
    for (size_t i = 0; i < count; ++i) {
        const MultiTensorEntry<kLists>& a = tensors[i];
        if (a.numel <= 0) continue;
        if (tab.num_tensors == kMultiTensorMaxTensors && !flush()) return err;
        add_tensor(a);
        const int64_t chunks = (a.numel + kMultiTensorChunk - 1) / kMultiTensorChunk;
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

}  // namespace accelops
