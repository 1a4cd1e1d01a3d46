// The host side of a fused optimizer's binding, written once (torch stable ABI; compiled by the host
// compiler, never by nvcc): the last-line checks of a step's tensor lists, and the run that groups the
// tensors by (param dtype, state dtype), fills launch tables (cuda_multi_tensor.h) and launches each on the
// current stream. An op's binding names its lists and passes its launcher:
//
//   const StepLists<kAdamLists> step{"fused_adam", {&params, &grads, &exp_avgs, &exp_avg_sqs, &steps}, 2};
//   check_step_lists(step);
//   run_step_lists(step, [&](int param_code, int state_code, const AdamTable& table, cudaStream_t stream) {
//       return launch_fused_adam(param_code, state_code, table, hyper, stream);
//   });
//
// The checks' messages are constant strings: the Python validators name the culprit first (or after an
// error from here), and a formatted C++ message once segfaulted under a mismatched C++ runtime.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include <torch/headeronly/core/Layout.h>
#include <torch/headeronly/macros/Export.h>

#include "cuda_multi_tensor.h"
#include "cuda_stable_binding.h"

namespace accelops {

using TensorList = std::vector<torch::stable::Tensor>;

// One step's tensor lists in its table's order: params, grads, `states` state lists (element-wise, float32
// or the param dtype, one dtype per param), then per-tensor scalars (one-element float32, e.g. step counts).
// Hidden, as torch's stable types it points to: each library has its own.
template <int kLists>
struct C10_HIDDEN StepLists {
    const char* op;                                // names the op in messages ("fused_adam")
    std::array<const TensorList*, kLists> lists;
    int states;
};

// A tensor of a step is dense, contiguous and on params[0]'s `device`.
inline void check_step_tensor(const char* op, const torch::stable::Tensor& t, const torch::stable::Device& device) {
    STD_TORCH_CHECK(t.layout() == torch::headeronly::Layout::Strided, op,
                    ": tensors must be dense (sparse is not supported)");
    STD_TORCH_CHECK(t.device() == device, op, ": all tensors of one step must be on params[0]'s device");
    STD_TORCH_CHECK(t.is_contiguous(), op, ": tensors must be contiguous");
}

// A one-element float32 tensor on `device`.
inline bool one_element_fp32(const torch::stable::Tensor& t, const torch::stable::Device& device) {
    return t.device() == device && t.scalar_type() == torch::headeronly::ScalarType::Float && t.numel() == 1;
}

// The last-line checks of every tensor of the step (see StepLists).
template <int kLists>
void check_step_lists(const StepLists<kLists>& step) {
    using torch::headeronly::ScalarType;
    const char* op = step.op;
    const TensorList& params = *step.lists[kParamList];
    const size_t n = params.size();
    for (const TensorList* list : step.lists) {
        STD_TORCH_CHECK(list->size() == n, op, ": the tensor lists of a step must have the same length");
    }
    if (n == 0) return;
    const torch::stable::Device device = params[0].device();
    STD_TORCH_CHECK(params[0].is_cuda(), op, ": tensors must be on a CUDA device");
    const int elementwise = kFirstStateList + step.states;
    for (size_t i = 0; i < n; ++i) {
        const torch::stable::Tensor& p = params[i];
        for (int l = 0; l < elementwise; ++l) check_step_tensor(op, (*step.lists[l])[i], device);
        STD_TORCH_CHECK(dtype_code(p.scalar_type()) >= 0, op, ": params must be float32, float16 or bfloat16");
        STD_TORCH_CHECK((*step.lists[kGradList])[i].scalar_type() == p.scalar_type(), op,
                        ": a grad's dtype differs from its param's");
        if (step.states > 0) {
            const ScalarType st = (*step.lists[kFirstStateList])[i].scalar_type();
            STD_TORCH_CHECK(st == ScalarType::Float || st == p.scalar_type(), op,
                            ": state must be float32 or the param dtype");
            for (int l = kFirstStateList + 1; l < elementwise; ++l) {
                STD_TORCH_CHECK((*step.lists[l])[i].scalar_type() == st, op,
                                ": the state tensors of a param must have one dtype");
            }
        }
        for (int l = kGradList; l < elementwise; ++l) {
            STD_TORCH_CHECK((*step.lists[l])[i].numel() == p.numel(), op,
                            ": grads and state must have as many elements as their params");
        }
        for (int l = elementwise; l < kLists; ++l) {
            STD_TORCH_CHECK(one_element_fp32((*step.lists[l])[i], device), op,
                            ": per-tensor scalars (steps) must be one-element float32 tensors on the params' device");
        }
    }
}

// An optional one-element float32 tensor on `device` (e.g. grad_scale), as a device pointer or null.
inline const float* optional_scalar(const char* op, const std::optional<torch::stable::Tensor>& t,
                                    const torch::stable::Device& device) {
    if (!t.has_value()) return nullptr;
    STD_TORCH_CHECK(one_element_fp32(*t, device), op,
                    ": optional scalars (grad_scale, found_inf) must be one-element float32 tensors on the params' "
                    "device");
    return static_cast<const float*>(t->const_data_ptr());
}

// Runs a checked step: groups its tensors by (param dtype, state dtype) and calls
// launch(param_code, state_code, table, stream) for each launch table of each group, on params[0]'s device and
// its current stream. Raises on a tensor too large for a table or a failed launch.
template <int kLists, typename LaunchFn>
void run_step_lists(const StepLists<kLists>& step, LaunchFn&& launch) {
    const TensorList& params = *step.lists[kParamList];
    if (params.empty()) return;
    const int32_t index = params[0].get_device_index();
    const torch::stable::accelerator::DeviceGuard guard(index);
    const int state_list = step.states > 0 ? kFirstStateList : kParamList;
    std::map<std::pair<int, int>, std::vector<size_t>> buckets;
    for (size_t i = 0; i < params.size(); ++i) {
        buckets[{dtype_code(params[i].scalar_type()), dtype_code((*step.lists[state_list])[i].scalar_type())}]
            .push_back(i);
    }
    const cudaStream_t stream = current_stream(index);
    const int elementwise_end = kFirstStateList + step.states;
    for (const auto& kv : buckets) {
        std::vector<MultiTensorEntry<kLists>> tensors(kv.second.size());
        for (size_t k = 0; k < kv.second.size(); ++k) {
            const size_t i = kv.second[k];
            for (int l = 0; l < kLists; ++l) {
                const torch::stable::Tensor& t = (*step.lists[l])[i];
                const bool written = l == kParamList || (l >= kFirstStateList && l < elementwise_end);
                tensors[k].ptr[l] = written ? t.mutable_data_ptr() : const_cast<void*>(t.const_data_ptr());
            }
            tensors[k].numel = params[i].numel();
        }
        const int err = fill_multi_tensor_tables(tensors.data(), tensors.size(),
                                                 [&](const MultiTensorTable<kLists>& table) {
            return launch(kv.first.first, kv.first.second, table, stream);
        });
        STD_TORCH_CHECK(err != kMultiTensorTooLarge, step.op, ": a param is too large (over 2**31 chunks)");
        STD_TORCH_CHECK(err == cudaSuccess, step.op, ": kernel launch failed: ",
                        cudaGetErrorString(static_cast<cudaError_t>(err)));
    }
}

}  // namespace accelops
