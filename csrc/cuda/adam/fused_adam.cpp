// Python binding of the multi-tensor fused Adam kernel: validates the tensor lists, groups them by
// (param dtype, state dtype), fills launch tables and launches on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cstdio>
#include <map>
#include <utility>
#include <vector>

#include "cuda_dtype_codes.h"
#include "cuda_fused_adam.h"

namespace {

using accelops::AdamHyper;
using accelops::AdamTable;

int dtype_code(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return accelops::kF32;
        case at::kHalf: return accelops::kF16;
        case at::kBFloat16: return accelops::kBF16;
        default: return -1;
    }
}

// Last-line checks only: accelops.ops.fused_adam validates every input in Python (with messages that
// name the tensor, its shape and dtype) before calling here. The messages below are constant strings on
// purpose: a TORCH_CHECK that formats values (c10::str) segfaulted in one deployment (a libstdc++/ABI
// mismatch), so nothing here formats integers, devices or dtypes.
void check_tensor(const at::Tensor& t, const at::Device& device) {
    TORCH_CHECK(t.layout() == at::kStrided, "fused_adam: tensors must be dense (sparse is not supported)");
    TORCH_CHECK(t.device() == device, "fused_adam: all tensors of one step must be on params[0]'s device");
    TORCH_CHECK(t.is_contiguous(), "fused_adam: tensors must be contiguous");
}

void validate(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
              const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
              const std::vector<at::Tensor>& steps) {
    const size_t n = params.size();
    TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && steps.size() == n,
                "fused_adam: params, grads, exp_avgs, exp_avg_sqs and steps must have the same length");
    if (n == 0) return;
    const at::Device device = params[0].device();
    TORCH_CHECK(device.is_cuda(), "fused_adam: tensors must be on a CUDA device");
    for (size_t i = 0; i < n; ++i) {
        const at::Tensor& p = params[i];
        check_tensor(p, device);
        check_tensor(grads[i], device);
        check_tensor(exp_avgs[i], device);
        check_tensor(exp_avg_sqs[i], device);
        TORCH_CHECK(dtype_code(p.scalar_type()) >= 0, "fused_adam: params must be float32, float16 or bfloat16");
        TORCH_CHECK(grads[i].scalar_type() == p.scalar_type(), "fused_adam: a grad's dtype differs from its param's");
        const at::ScalarType st = exp_avgs[i].scalar_type();
        TORCH_CHECK(st == at::kFloat || st == p.scalar_type(),
                    "fused_adam: state must be float32 or the param dtype");
        TORCH_CHECK(exp_avg_sqs[i].scalar_type() == st, "fused_adam: exp_avg_sq must have the dtype of exp_avg");
        TORCH_CHECK(grads[i].numel() == p.numel() && exp_avgs[i].numel() == p.numel() &&
                        exp_avg_sqs[i].numel() == p.numel(),
                    "fused_adam: grads, exp_avgs and exp_avg_sqs must have as many elements as their params");
        TORCH_CHECK(steps[i].device() == device && steps[i].scalar_type() == at::kFloat && steps[i].numel() == 1,
                    "fused_adam: steps must be one-element float32 tensors on the params' device");
    }
}

const float* optional_scalar(const c10::optional<at::Tensor>& t, const at::Device& device) {
    if (!t.has_value()) return nullptr;
    TORCH_CHECK(t->device() == device && t->scalar_type() == at::kFloat && t->numel() == 1,
                "fused_adam: grad_scale and found_inf must be one-element float32 tensors on the params' device");
    return t->data_ptr<float>();
}

void check_launch(cudaError_t err) {
    if (err != cudaSuccess) {
        std::fprintf(stderr, "fused_adam: kernel launch failed: %s\n", cudaGetErrorString(err));
        TORCH_CHECK(false, "fused_adam: kernel launch failed (the CUDA error is printed on stderr)");
    }
}

// Launches the tensors at `idx` (one dtype pair) in as many tables as they need.
void run_bucket(int param_code, int state_code, const std::vector<size_t>& idx,
                const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
                const std::vector<at::Tensor>& steps, const AdamHyper& hyper, cudaStream_t stream) {
    std::vector<accelops::AdamTensor> tensors;
    tensors.reserve(idx.size());
    for (size_t i : idx) {
        tensors.push_back({params[i].data_ptr(), grads[i].data_ptr(), exp_avgs[i].data_ptr(),
                           exp_avg_sqs[i].data_ptr(), steps[i].data_ptr<float>(), params[i].numel()});
    }
    const int err = accelops::fill_adam_tables(tensors.data(), tensors.size(), [&](const AdamTable& tab) {
        return accelops::launch_fused_adam(param_code, state_code, tab, hyper, stream);
    });
    TORCH_CHECK(err != accelops::kAdamTooLarge, "fused_adam: a param is too large (over 2**31 chunks)");
    check_launch(static_cast<cudaError_t>(err));
}

}  // namespace

// One Adam/AdamW step over every tensor of the lists, in place. steps hold each tensor's step
// count, already incremented for this step.
void fused_adam_step(std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
                     std::vector<at::Tensor> exp_avgs, std::vector<at::Tensor> exp_avg_sqs,
                     std::vector<at::Tensor> steps, double lr, double beta1, double beta2, double eps,
                     double weight_decay, bool adam_w_mode, bool bias_correction,
                     c10::optional<at::Tensor> grad_scale, c10::optional<at::Tensor> found_inf) {
    validate(params, grads, exp_avgs, exp_avg_sqs, steps);
    if (params.empty()) return;
    const at::Device device = params[0].device();
    const c10::cuda::CUDAGuard guard(device);
    AdamHyper hyper{};
    hyper.lr = static_cast<float>(lr);
    hyper.beta1 = static_cast<float>(beta1);
    hyper.beta2 = static_cast<float>(beta2);
    hyper.eps = static_cast<float>(eps);
    hyper.weight_decay = static_cast<float>(weight_decay);
    hyper.adam_w_mode = adam_w_mode ? 1 : 0;
    hyper.bias_correction = bias_correction ? 1 : 0;
    hyper.grad_scale = optional_scalar(grad_scale, device);
    hyper.found_inf = optional_scalar(found_inf, device);

    std::map<std::pair<int, int>, std::vector<size_t>> buckets;
    for (size_t i = 0; i < params.size(); ++i) {
        buckets[{dtype_code(params[i].scalar_type()), dtype_code(exp_avgs[i].scalar_type())}].push_back(i);
    }
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
    for (const auto& kv : buckets) {
        run_bucket(kv.first.first, kv.first.second, kv.second, params, grads, exp_avgs, exp_avg_sqs, steps,
                   hyper, stream);
    }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("fused_adam_step", &fused_adam_step,
          "Multi-tensor Adam/AdamW step, in place (params, exp_avgs, exp_avg_sqs are updated)");
}
