// Binding of the fused residual-add + layer norm CUDA kernels (torch stable ABI): checks, output
// allocation, launch planning and launches on the current stream.
#include <torch/csrc/stable/ops.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <tuple>

#include "cuda_layer_norm.h"
#include "cuda_stable_binding.h"

namespace {

using accelops::dtype_code;
using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// Last-line checks only: accelops.ops.layer_norm_cuda validates every input in Python (with messages
// that name shapes, dtypes and devices) before calling here. The messages below are constant strings:
// the Python validator names the culprit.
void check_like(const Tensor& t, const Tensor& x) {
    STD_TORCH_CHECK(t.device() == x.device(), "add_layer_norm (cuda): all tensors must be on x's device");
    STD_TORCH_CHECK(t.scalar_type() == x.scalar_type(), "add_layer_norm (cuda): all tensors must have x's dtype");
    STD_TORCH_CHECK(t.is_contiguous(), "add_layer_norm (cuda): all tensors must be contiguous");
}

int64_t row_size(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    STD_TORCH_CHECK(x.is_cuda(), "add_layer_norm (cuda): x must be a CUDA tensor");
    STD_TORCH_CHECK(dtype_code(x.scalar_type()) >= 0,
                    "add_layer_norm (cuda): unsupported dtype; supported: float32, float16, bfloat16");
    STD_TORCH_CHECK(x.dim() >= 1, "add_layer_norm (cuda): x must have at least one dimension");
    STD_TORCH_CHECK(x.is_contiguous(), "add_layer_norm (cuda): x must be contiguous");
    const int64_t n = x.size(-1);
    STD_TORCH_CHECK(n >= 1 && n <= accelops::kMaxRowSize,
                    "add_layer_norm (cuda): the row size must be in [1, 2**30]");
    check_like(weight, x);
    check_like(bias, x);
    STD_TORCH_CHECK(weight.dim() == 1 && weight.size(0) == n && bias.dim() == 1 && bias.size(0) == n,
                    "add_layer_norm (cuda): weight and bias must have shape [N] (x's last dim)");
    return n;
}

bool aligned16(std::initializer_list<const void*> ptrs) {
    for (const void* p : ptrs) {
        if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
    }
    return true;
}

int sm_count(int32_t device_index) {
    int count = 0;
    const cudaError_t err = cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device_index);
    STD_TORCH_CHECK(err == cudaSuccess, "add_layer_norm (cuda): cannot query the device: ", cudaGetErrorString(err));
    return count;
}

void check_launch(cudaError_t err, const char* what) {
    STD_TORCH_CHECK(err == cudaSuccess, "add_layer_norm (cuda): ", what, " kernel launch failed: ",
                    cudaGetErrorString(err));
}

float* f32(Tensor& t) { return static_cast<float*>(t.mutable_data_ptr()); }
const float* f32(const Tensor& t) { return static_cast<const float*>(t.const_data_ptr()); }

// (y, s, mean, rstd) with s = x + residual (0-element when residual is None) and
// y = layer_norm(s or x, weight, bias, eps); mean/rstd are fp32 per row.
std::tuple<Tensor, Tensor, Tensor, Tensor> add_layer_norm_fwd(const Tensor& x, const std::optional<Tensor>& residual,
                                                              const Tensor& weight, const Tensor& bias, double eps) {
    const int64_t n = row_size(x, weight, bias);
    if (residual.has_value()) {
        check_like(*residual, x);
        STD_TORCH_CHECK(residual->sizes() == x.sizes(), "add_layer_norm (cuda): residual must have x's shape");
    }
    const int32_t index = x.get_device_index();
    const torch::stable::accelerator::DeviceGuard guard(index);
    const int64_t rows = x.numel() / n;
    Tensor y = torch::stable::empty_like(x);
    Tensor s = residual.has_value() ? torch::stable::empty_like(x) : torch::stable::new_empty(x, {0});
    Tensor mean = torch::stable::new_empty(x, {rows}, ScalarType::Float);
    Tensor rstd = torch::stable::new_empty(x, {rows}, ScalarType::Float);
    if (rows == 0) return {y, s, mean, rstd};
    const void* r_ptr = residual.has_value() ? residual->const_data_ptr() : nullptr;
    void* s_ptr = residual.has_value() ? s.mutable_data_ptr() : nullptr;
    const bool aligned = aligned16({x.const_data_ptr(), r_ptr, s_ptr, y.const_data_ptr(), weight.const_data_ptr(),
                                    bias.const_data_ptr()});
    const accelops::LnPlan plan = accelops::plan_layer_norm(static_cast<int>(x.element_size()), aligned, rows,
                                                            static_cast<int>(n), sm_count(index), false);
    check_launch(accelops::launch_add_layer_norm_fwd(dtype_code(x.scalar_type()), plan, x.const_data_ptr(), r_ptr,
                                                     s_ptr, y.mutable_data_ptr(), weight.const_data_ptr(),
                                                     bias.const_data_ptr(), f32(mean), f32(rstd), rows,
                                                     static_cast<int>(n), static_cast<float>(eps),
                                                     accelops::current_stream(index)),
                 "forward");
    return {y, s, mean, rstd};
}

// (grad_input, grad_weight, grad_bias) of y = layer_norm(input) given the forward's mean/rstd.
std::tuple<Tensor, Tensor, Tensor> add_layer_norm_bwd(const Tensor& grad_y, const Tensor& input, const Tensor& mean,
                                                      const Tensor& rstd, const Tensor& weight) {
    const int64_t n = row_size(input, weight, weight);
    check_like(grad_y, input);
    STD_TORCH_CHECK(grad_y.sizes() == input.sizes(), "add_layer_norm (cuda): grad_y must have input's shape");
    const int64_t rows = input.numel() / n;
    for (const Tensor* t : {&mean, &rstd}) {
        STD_TORCH_CHECK(t->device() == input.device() && t->scalar_type() == ScalarType::Float &&
                            t->numel() == rows && t->is_contiguous(),
                        "add_layer_norm (cuda): mean and rstd must be contiguous float32 tensors of one element per "
                        "row, on input's device");
    }
    const int32_t index = input.get_device_index();
    const torch::stable::accelerator::DeviceGuard guard(index);
    Tensor grad_input = torch::stable::empty_like(input);
    if (rows == 0) {
        return {grad_input, torch::stable::new_zeros(weight, weight.sizes()),
                torch::stable::new_zeros(weight, weight.sizes())};
    }
    Tensor grad_weight = torch::stable::empty_like(weight);
    Tensor grad_bias = torch::stable::empty_like(weight);
    const bool aligned = aligned16({grad_y.const_data_ptr(), input.const_data_ptr(), weight.const_data_ptr(),
                                    grad_input.const_data_ptr()});
    const accelops::LnPlan plan = accelops::plan_layer_norm(static_cast<int>(input.element_size()), aligned, rows,
                                                            static_cast<int>(n), sm_count(index), true);
    Tensor workspace = torch::stable::new_empty(
        input, {accelops::layer_norm_bwd_workspace_floats(plan, rows, static_cast<int>(n))}, ScalarType::Float);
    check_launch(accelops::launch_layer_norm_bwd(dtype_code(input.scalar_type()), plan, grad_y.const_data_ptr(),
                                                 input.const_data_ptr(), f32(mean), f32(rstd),
                                                 weight.const_data_ptr(), grad_input.mutable_data_ptr(),
                                                 grad_weight.mutable_data_ptr(), grad_bias.mutable_data_ptr(),
                                                 f32(workspace), rows, static_cast<int>(n),
                                                 accelops::current_stream(index)),
                 "backward");
    return {grad_input, grad_weight, grad_bias};
}

}  // namespace

ACCELOPS_LIBRARY(m) {
    // Fused residual-add + layer norm forward (CUDA): (y, s, mean, rstd).
    m.def("add_layer_norm_fwd(Tensor x, Tensor? residual, Tensor weight, Tensor bias, float eps) "
          "-> (Tensor, Tensor, Tensor, Tensor)");
    // Layer norm backward: input, weight and bias grads (CUDA).
    m.def("add_layer_norm_bwd(Tensor grad_y, Tensor input, Tensor mean, Tensor rstd, Tensor weight) "
          "-> (Tensor, Tensor, Tensor)");
}

ACCELOPS_LIBRARY_IMPL(CUDA, m) {
    m.impl("add_layer_norm_fwd", TORCH_BOX(&add_layer_norm_fwd));
    m.impl("add_layer_norm_bwd", TORCH_BOX(&add_layer_norm_bwd));
}
