// Binding of the multi-tensor fused Adam kernel (torch stable ABI): the fused family's checks and run
// (cuda_multi_tensor_binding.h) over Adam's lists, with its hyperparameters.
#include <optional>
#include <vector>

#include "cuda_fused_adam.h"
#include "cuda_multi_tensor_binding.h"

namespace {

using accelops::AdamHyper;
using accelops::AdamTable;
using torch::stable::Device;
using torch::stable::Tensor;

// One Adam/AdamW step over every tensor of the lists, in place. steps hold each tensor's step
// count, already incremented for this step. accelops.ops.fused_adam validates every input in Python
// first (or after an error from here, on FusedAdam.step's fast path); these checks are the last line.
void fused_adam_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                     const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                     const std::vector<Tensor>& steps, double lr, double beta1, double beta2, double eps,
                     double weight_decay, bool adam_w_mode, bool bias_correction,
                     const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf) {
    const accelops::StepLists<accelops::kAdamLists> step{"fused_adam",
                                                         {&params, &grads, &exp_avgs, &exp_avg_sqs, &steps}, 2};
    accelops::check_step_lists(step);
    if (params.empty()) return;
    const Device device = params[0].device();
    AdamHyper hyper{};
    hyper.lr = static_cast<float>(lr);
    hyper.beta1 = static_cast<float>(beta1);
    hyper.beta2 = static_cast<float>(beta2);
    hyper.eps = static_cast<float>(eps);
    hyper.weight_decay = static_cast<float>(weight_decay);
    hyper.adam_w_mode = adam_w_mode ? 1 : 0;
    hyper.bias_correction = bias_correction ? 1 : 0;
    hyper.grad_scale = accelops::optional_scalar(step.op, grad_scale, device);
    hyper.found_inf = accelops::optional_scalar(step.op, found_inf, device);
    accelops::run_step_lists(step, [&](int param_code, int state_code, const AdamTable& table, cudaStream_t stream) {
        return accelops::launch_fused_adam(param_code, state_code, table, hyper, stream);
    });
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
