// Binding of the MoE dispatch/combine CUDA kernels (torch stable ABI): checks, output allocation, the route ->
// buffer-row table and launches on the current stream. accelops.ops.moe_dispatch.cuda validates every input
// in Python first (shapes, dtypes, devices and route values); the checks here are constant-message last lines.
#include <torch/csrc/stable/ops.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "cuda_moe_dispatch.h"
#include "cuda_stable_binding.h"

namespace {

using accelops::dtype_code;
using torch::headeronly::ScalarType;
using torch::stable::Tensor;

void check_data(const Tensor& t, int64_t dim) {
    STD_TORCH_CHECK(t.is_cuda() && t.is_contiguous() && t.dim() == dim,
                    "moe_dispatch (cuda): data tensors must be contiguous CUDA tensors of the documented rank");
    STD_TORCH_CHECK(dtype_code(t.scalar_type()) >= 0,
                    "moe_dispatch (cuda): unsupported dtype; supported: float32, float16, bfloat16");
}

void check_routes(const Tensor& expert, const Tensor& slot, const std::optional<Tensor>& weight, int64_t tokens,
                  const Tensor& data) {
    STD_TORCH_CHECK(expert.device() == data.device() && slot.device() == data.device() && expert.is_contiguous() &&
                        slot.is_contiguous() && expert.scalar_type() == ScalarType::Int &&
                        slot.scalar_type() == ScalarType::Int && expert.dim() == 2 && expert.size(1) == tokens &&
                        slot.sizes() == expert.sizes() && expert.numel() < (int64_t(1) << 31),
                    "moe_dispatch (cuda): expert and slot must be contiguous int32 [k, S] on the data's device");
    if (weight.has_value()) {
        STD_TORCH_CHECK(weight->device() == data.device() && weight->is_contiguous() &&
                            weight->scalar_type() == ScalarType::Float && weight->sizes() == expert.sizes(),
                        "moe_dispatch (cuda): gate must be a contiguous float32 [k, S] on the data's device");
    }
}

void check_launch(cudaError_t err, const char* what) {
    STD_TORCH_CHECK(err == cudaSuccess, "moe_dispatch (cuda): ", what, " launch failed: ", cudaGetErrorString(err));
}

const int32_t* i32(const Tensor& t) { return static_cast<const int32_t*>(t.const_data_ptr()); }
const float* f32_or_null(const std::optional<Tensor>& t) {
    return t.has_value() ? static_cast<const float*>(t->const_data_ptr()) : nullptr;
}

Tensor source_table(const Tensor& expert, const Tensor& slot, int64_t capacity, int64_t rows, cudaStream_t stream) {
    Tensor source = torch::stable::new_empty(expert, {rows > 0 ? rows : 1}, ScalarType::Int);
    check_launch(accelops::launch_moe_build_source(i32(expert), i32(slot), expert.numel(), capacity, rows,
                                                   static_cast<int32_t*>(source.mutable_data_ptr()), stream),
                 "source table");
    return source;
}

Tensor moe_dispatch(const Tensor& tokens, const Tensor& expert, const Tensor& slot,
                    const std::optional<Tensor>& weight, int64_t num_experts, int64_t capacity) {
    check_data(tokens, 2);
    const int64_t s = tokens.size(0), m = tokens.size(1);
    check_routes(expert, slot, weight, s, tokens);
    STD_TORCH_CHECK(num_experts >= 0 && capacity >= 0 && num_experts * capacity < (int64_t(1) << 31),
                    "moe_dispatch (cuda): E * C must be in [0, 2**31)");
    const int32_t index = tokens.get_device_index();
    const torch::stable::accelerator::DeviceGuard guard(index);
    const cudaStream_t stream = accelops::current_stream(index);
    Tensor buffer = torch::stable::new_empty(tokens, {num_experts, capacity, m});
    const int64_t rows = num_experts * capacity;
    if (rows == 0) return buffer;
    Tensor source = source_table(expert, slot, capacity, rows, stream);
    check_launch(accelops::launch_moe_dispatch(dtype_code(tokens.scalar_type()), tokens.const_data_ptr(), i32(source),
                                               f32_or_null(weight), buffer.mutable_data_ptr(), rows, s, m, stream),
                 "dispatch");
    return buffer;
}

Tensor moe_combine(const Tensor& expert_output, const Tensor& expert, const Tensor& slot,
                   const std::optional<Tensor>& weight) {
    check_data(expert_output, 3);
    STD_TORCH_CHECK(expert.dim() == 2, "moe_dispatch (cuda): expert must be [k, S]");
    const int64_t e = expert_output.size(0), c = expert_output.size(1), m = expert_output.size(2);
    const int64_t s = expert.size(1);
    check_routes(expert, slot, weight, s, expert_output);
    const int32_t index = expert_output.get_device_index();
    const torch::stable::accelerator::DeviceGuard guard(index);
    Tensor out = torch::stable::new_empty(expert_output, {s, m});
    check_launch(accelops::launch_moe_combine(dtype_code(expert_output.scalar_type()), expert_output.const_data_ptr(),
                                              i32(expert), i32(slot), f32_or_null(weight), out.mutable_data_ptr(),
                                              expert.size(0), s, e, c, m, accelops::current_stream(index)),
                 "combine");
    return out;
}

std::tuple<Tensor, Tensor> moe_combine_bwd(const Tensor& grad_out, const Tensor& expert_output, const Tensor& expert,
                                           const Tensor& slot, const Tensor& gate) {
    check_data(grad_out, 2);
    check_data(expert_output, 3);
    STD_TORCH_CHECK(grad_out.device() == expert_output.device() &&
                        grad_out.scalar_type() == expert_output.scalar_type() &&
                        grad_out.size(1) == expert_output.size(2),
                    "moe_dispatch (cuda): grad_out must be [S, M] of expert_output's dtype and device");
    const int64_t e = expert_output.size(0), c = expert_output.size(1), m = expert_output.size(2);
    const int64_t s = grad_out.size(0);
    check_routes(expert, slot, gate, s, expert_output);
    const int32_t index = expert_output.get_device_index();
    const torch::stable::accelerator::DeviceGuard guard(index);
    const cudaStream_t stream = accelops::current_stream(index);
    Tensor grad_y = torch::stable::empty_like(expert_output);
    Tensor grad_gate = torch::stable::new_zeros(gate, gate.sizes());
    const int64_t rows = e * c;
    if (rows == 0) return {grad_y, grad_gate};
    Tensor source = source_table(expert, slot, c, rows, stream);
    check_launch(accelops::launch_moe_combine_bwd(dtype_code(expert_output.scalar_type()), grad_out.const_data_ptr(),
                                                  expert_output.const_data_ptr(), i32(source),
                                                  static_cast<const float*>(gate.const_data_ptr()),
                                                  grad_y.mutable_data_ptr(),
                                                  static_cast<float*>(grad_gate.mutable_data_ptr()), rows, s, m, stream),
                 "combine backward");
    return {grad_y, grad_gate};
}

}  // namespace

ACCELOPS_LIBRARY(m) {
    // Token rows into the [E, C, M] expert buffer by route (weight: optional float32 [k, S] factor).
    m.def("moe_dispatch(Tensor tokens, Tensor expert, Tensor slot, Tensor? weight, int num_experts, int capacity) "
          "-> Tensor");
    // Gate-weighted sum of each token's expert rows: [S, M].
    m.def("moe_combine(Tensor expert_output, Tensor expert, Tensor slot, Tensor? weight) -> Tensor");
    // Gradients of moe_combine with respect to expert_output and the gate.
    m.def("moe_combine_bwd(Tensor grad_out, Tensor expert_output, Tensor expert, Tensor slot, Tensor gate) "
          "-> (Tensor, Tensor)");
}

ACCELOPS_LIBRARY_IMPL(CUDA, m) {
    m.impl("moe_dispatch", TORCH_BOX(&moe_dispatch));
    m.impl("moe_combine", TORCH_BOX(&moe_combine));
    m.impl("moe_combine_bwd", TORCH_BOX(&moe_combine_bwd));
}
