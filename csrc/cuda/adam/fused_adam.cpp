// Binding of the multi-tensor fused Adam kernel (torch stable ABI): validates the tensor lists, groups them
// by (param dtype, state dtype), fills launch tables and launches on the current stream.
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "cuda_fused_adam.h"
#include "cuda_stable_binding.h"

namespace {

using accelops::AdamHyper;
using accelops::AdamTable;
using accelops::check_step_tensor;
using accelops::dtype_code;
using torch::headeronly::ScalarType;
using torch::stable::Device;
using torch::stable::Tensor;

// Last-line checks only: accelops.ops.fused_adam validates every input in Python (with messages that
// name the tensor, its shape and dtype) before calling here, or after an error from here (the fast path
// of FusedAdam.step). The messages are constant strings: the Python validator names the culprit.
void validate(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
              const std::vector<Tensor>& steps) {
    const size_t n = params.size();
    STD_TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && steps.size() == n,
                    "fused_adam: params, grads, exp_avgs, exp_avg_sqs and steps must have the same length");
    if (n == 0) return;
    const Device device = params[0].device();
    STD_TORCH_CHECK(params[0].is_cuda(), "fused_adam: tensors must be on a CUDA device");
    for (size_t i = 0; i < n; ++i) {
        const Tensor& p = params[i];
        check_step_tensor("fused_adam", p, device);
        check_step_tensor("fused_adam", grads[i], device);
        check_step_tensor("fused_adam", exp_avgs[i], device);
        check_step_tensor("fused_adam", exp_avg_sqs[i], device);
        STD_TORCH_CHECK(dtype_code(p.scalar_type()) >= 0, "fused_adam: params must be float32, float16 or bfloat16");
        STD_TORCH_CHECK(grads[i].scalar_type() == p.scalar_type(),
                        "fused_adam: a grad's dtype differs from its param's");
        const ScalarType st = exp_avgs[i].scalar_type();
        STD_TORCH_CHECK(st == ScalarType::Float || st == p.scalar_type(),
                        "fused_adam: state must be float32 or the param dtype");
        STD_TORCH_CHECK(exp_avg_sqs[i].scalar_type() == st, "fused_adam: exp_avg_sq must have the dtype of exp_avg");
        STD_TORCH_CHECK(grads[i].numel() == p.numel() && exp_avgs[i].numel() == p.numel() &&
                            exp_avg_sqs[i].numel() == p.numel(),
                        "fused_adam: grads, exp_avgs and exp_avg_sqs must have as many elements as their params");
        STD_TORCH_CHECK(steps[i].device() == device && steps[i].scalar_type() == ScalarType::Float &&
                            steps[i].numel() == 1,
                        "fused_adam: steps must be one-element float32 tensors on the params' device");
    }
}

const float* optional_scalar(const std::optional<Tensor>& t, const Device& device) {
    if (!t.has_value()) return nullptr;
    STD_TORCH_CHECK(t->device() == device && t->scalar_type() == ScalarType::Float && t->numel() == 1,
                    "fused_adam: grad_scale and found_inf must be one-element float32 tensors on the params' device");
    return static_cast<const float*>(t->const_data_ptr());
}

// Launches the tensors at `idx` (one dtype pair) in as many tables as they need.
void run_bucket(int param_code, int state_code, const std::vector<size_t>& idx, const std::vector<Tensor>& params,
                const std::vector<Tensor>& grads, const std::vector<Tensor>& exp_avgs,
                const std::vector<Tensor>& exp_avg_sqs, const std::vector<Tensor>& steps, const AdamHyper& hyper,
                cudaStream_t stream) {
    std::vector<accelops::AdamTensor> tensors;
    tensors.reserve(idx.size());
    for (size_t i : idx) {
        tensors.push_back({params[i].mutable_data_ptr(), grads[i].const_data_ptr(), exp_avgs[i].mutable_data_ptr(),
                           exp_avg_sqs[i].mutable_data_ptr(), static_cast<const float*>(steps[i].const_data_ptr()),
                           params[i].numel()});
    }
    const int err = accelops::fill_adam_tables(tensors.data(), tensors.size(), [&](const AdamTable& tab) {
        return accelops::launch_fused_adam(param_code, state_code, tab, hyper, stream);
    });
    STD_TORCH_CHECK(err != accelops::kAdamTooLarge, "fused_adam: a param is too large (over 2**31 chunks)");
    STD_TORCH_CHECK(err == cudaSuccess, "fused_adam: kernel launch failed: ",
                    cudaGetErrorString(static_cast<cudaError_t>(err)));
}

// One Adam/AdamW step over every tensor of the lists, in place. steps hold each tensor's step
// count, already incremented for this step.
void fused_adam_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                     const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                     const std::vector<Tensor>& steps, double lr, double beta1, double beta2, double eps,
                     double weight_decay, bool adam_w_mode, bool bias_correction,
                     const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf) {
    validate(params, grads, exp_avgs, exp_avg_sqs, steps);
    if (params.empty()) return;
    const Device device = params[0].device();
    const int32_t index = params[0].get_device_index();
    const torch::stable::accelerator::DeviceGuard guard(index);
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
    const cudaStream_t stream = accelops::current_stream(index);
    for (const auto& kv : buckets) {
        run_bucket(kv.first.first, kv.first.second, kv.second, params, grads, exp_avgs, exp_avg_sqs, steps, hyper,
                   stream);
    }
}

}  // namespace

ACCELOPS_LIBRARY(m) {
    // Multi-tensor Adam/AdamW step, in place (params, exp_avgs, exp_avg_sqs are updated).
    m.def("fused_adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
          "Tensor[] steps, float lr, float beta1, float beta2, float eps, float weight_decay, bool adam_w_mode, "
          "bool bias_correction, Tensor? grad_scale, Tensor? found_inf) -> ()");
}

ACCELOPS_LIBRARY_IMPL(CUDA, m) {
    m.impl("fused_adam_step", TORCH_BOX(&fused_adam_step));
}
