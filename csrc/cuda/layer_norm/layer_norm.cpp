// Python binding of the fused residual-add + layer norm CUDA kernels: checks, output
// allocation, launch planning and launches on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cstdio>
#include <cstdint>
#include <vector>

#include "cuda_dtype_codes.h"
#include "cuda_layer_norm.h"

namespace {

int dtype_code(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return accelops::kF32;
        case at::kHalf: return accelops::kF16;
        case at::kBFloat16: return accelops::kBF16;
        default: return -1;
    }
}

// Last-line checks only: accelops.ops.layer_norm_cuda validates every input in Python (with messages
// that name shapes, dtypes and devices) before calling here. The messages below are constant strings on
// purpose: a TORCH_CHECK that formats values (c10::str) segfaulted in one deployment (a libstdc++/ABI
// mismatch), so nothing here formats integers, shapes, devices or dtypes.
void check_like(const at::Tensor& t, const at::Tensor& x) {
    TORCH_CHECK(t.device() == x.device(), "add_layer_norm (cuda): all tensors must be on x's device");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "add_layer_norm (cuda): all tensors must have x's dtype");
    TORCH_CHECK(t.is_contiguous(), "add_layer_norm (cuda): all tensors must be contiguous");
}

int64_t row_size(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
    TORCH_CHECK(x.is_cuda(), "add_layer_norm (cuda): x must be a CUDA tensor");
    TORCH_CHECK(dtype_code(x.scalar_type()) >= 0,
                "add_layer_norm (cuda): unsupported dtype; supported: float32, float16, bfloat16");
    TORCH_CHECK(x.dim() >= 1, "add_layer_norm (cuda): x must have at least one dimension");
    TORCH_CHECK(x.is_contiguous(), "add_layer_norm (cuda): x must be contiguous");
    const int64_t n = x.size(-1);
    TORCH_CHECK(n >= 1 && n <= accelops::kMaxRowSize, "add_layer_norm (cuda): the row size must be in [1, 2**30]");
    check_like(weight, x);
    check_like(bias, x);
    TORCH_CHECK(weight.dim() == 1 && weight.size(0) == n && bias.dim() == 1 && bias.size(0) == n,
                "add_layer_norm (cuda): weight and bias must have shape [N] (x's last dim)");
    return n;
}

bool aligned16(std::initializer_list<const void*> ptrs) {
    for (const void* p : ptrs) {
        if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
    }
    return true;
}

int sm_count(const at::Device& device) {
    int count = 0;
    const cudaError_t err = cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device.index());
    if (err != cudaSuccess) {
        std::fprintf(stderr, "add_layer_norm (cuda): cannot query the device: %s\n", cudaGetErrorString(err));
        TORCH_CHECK(false, "add_layer_norm (cuda): cannot query the device (the CUDA error is printed on stderr)");
    }
    return count;
}

void check_launch(cudaError_t err, const char* what) {
    if (err != cudaSuccess) {
        std::fprintf(stderr, "add_layer_norm (cuda): %s launch failed: %s\n", what, cudaGetErrorString(err));
        TORCH_CHECK(false, "add_layer_norm (cuda): kernel launch failed (the CUDA error is printed on stderr)");
    }
}

}  // namespace

// (y, s, mean, rstd) with s = x + residual (0-element when residual is None) and
// y = layer_norm(s or x, weight, bias, eps); mean/rstd are fp32 per row.
std::vector<at::Tensor> add_layer_norm_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& residual,
                                           const at::Tensor& weight, const at::Tensor& bias, double eps) {
    const int64_t n = row_size(x, weight, bias);
    if (residual.has_value()) {
        check_like(*residual, x);
        TORCH_CHECK(residual->sizes() == x.sizes(), "add_layer_norm (cuda): residual must have x's shape");
    }
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t rows = x.numel() / n;
    at::Tensor y = at::empty_like(x);
    at::Tensor s = residual.has_value() ? at::empty_like(x) : at::empty({0}, x.options());
    const auto stat_options = x.options().dtype(at::kFloat);
    at::Tensor mean = at::empty({rows}, stat_options);
    at::Tensor rstd = at::empty({rows}, stat_options);
    if (rows == 0) return {y, s, mean, rstd};
    const void* r_ptr = residual.has_value() ? residual->data_ptr() : nullptr;
    void* s_ptr = residual.has_value() ? s.data_ptr() : nullptr;
    const bool aligned = aligned16({x.data_ptr(), r_ptr, s_ptr, y.data_ptr(), weight.data_ptr(), bias.data_ptr()});
    const accelops::LnPlan plan = accelops::plan_layer_norm(static_cast<int>(x.element_size()), aligned, rows,
                                                            static_cast<int>(n), sm_count(x.device()), false);
    check_launch(accelops::launch_add_layer_norm_fwd(dtype_code(x.scalar_type()), plan, x.data_ptr(), r_ptr, s_ptr,
                                                     y.data_ptr(), weight.data_ptr(), bias.data_ptr(),
                                                     mean.data_ptr<float>(), rstd.data_ptr<float>(), rows,
                                                     static_cast<int>(n), static_cast<float>(eps),
                                                     c10::cuda::getCurrentCUDAStream(x.device().index()).stream()),
                 "forward");
    return {y, s, mean, rstd};
}

// (grad_input, grad_weight, grad_bias) of y = layer_norm(input) given the forward's mean/rstd.
std::vector<at::Tensor> add_layer_norm_bwd(const at::Tensor& grad_y, const at::Tensor& input,
                                           const at::Tensor& mean, const at::Tensor& rstd,
                                           const at::Tensor& weight) {
    const int64_t n = row_size(input, weight, weight);
    check_like(grad_y, input);
    TORCH_CHECK(grad_y.sizes() == input.sizes(), "add_layer_norm (cuda): grad_y must have input's shape");
    const int64_t rows = input.numel() / n;
    for (const at::Tensor* t : {&mean, &rstd}) {
        TORCH_CHECK(t->device() == input.device() && t->scalar_type() == at::kFloat && t->numel() == rows &&
                        t->is_contiguous(),
                    "add_layer_norm (cuda): mean and rstd must be contiguous float32 tensors of one element per "
                    "row, on input's device");
    }
    const c10::cuda::CUDAGuard guard(input.device());
    at::Tensor grad_input = at::empty_like(input);
    if (rows == 0) return {grad_input, at::zeros_like(weight), at::zeros_like(weight)};
    at::Tensor grad_weight = at::empty_like(weight);
    at::Tensor grad_bias = at::empty_like(weight);
    const bool aligned = aligned16({grad_y.data_ptr(), input.data_ptr(), weight.data_ptr(), grad_input.data_ptr()});
    const accelops::LnPlan plan = accelops::plan_layer_norm(static_cast<int>(input.element_size()), aligned, rows,
                                                            static_cast<int>(n), sm_count(input.device()), true);
    at::Tensor workspace = at::empty({accelops::layer_norm_bwd_workspace_floats(plan, rows, static_cast<int>(n))},
                                     input.options().dtype(at::kFloat));
    check_launch(accelops::launch_layer_norm_bwd(dtype_code(input.scalar_type()), plan, grad_y.data_ptr(),
                                                 input.data_ptr(), mean.data_ptr<float>(), rstd.data_ptr<float>(),
                                                 weight.data_ptr(), grad_input.data_ptr(), grad_weight.data_ptr(),
                                                 grad_bias.data_ptr(), workspace.data_ptr<float>(), rows,
                                                 static_cast<int>(n),
                                                 c10::cuda::getCurrentCUDAStream(input.device().index()).stream()),
                 "backward");
    return {grad_input, grad_weight, grad_bias};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("add_layer_norm_fwd", &add_layer_norm_fwd, "Fused residual-add + layer norm forward (CUDA)");
    m.def("add_layer_norm_bwd", &add_layer_norm_bwd, "Layer norm backward: input, weight and bias grads (CUDA)");
}
