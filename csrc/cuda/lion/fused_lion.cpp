// Binding of the multi-tensor fused Lion kernel (torch stable ABI): the fused family's checks and run
// (cuda_multi_tensor_binding.h) over Lion's lists, with its hyperparameters.
#include <vector>

#include "cuda_fused_lion.h"
#include "cuda_multi_tensor_binding.h"

namespace {

using accelops::LionTable;
using torch::stable::Tensor;

// One Lion step over every tensor of the lists, in place (params and exp_avgs). accelops.ops.fused_lion
// validates every input in Python first; these checks are the last line.
void fused_lion_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                     const std::vector<Tensor>& exp_avgs, double lr, double beta1, double beta2,
                     double weight_decay) {
    const accelops::StepLists<accelops::kLionLists> step{"fused_lion", {&params, &grads, &exp_avgs}, 1};
    accelops::check_step_lists(step);
    const accelops::LionHyper hyper = accelops::lion_hyper(lr, beta1, beta2, weight_decay);
    accelops::run_step_lists(step, [&](int param_code, int state_code, const LionTable& table, cudaStream_t stream) {
        return accelops::launch_fused_lion(param_code, state_code, table, hyper, stream);
    });
}

}  // namespace

ACCELOPS_LIBRARY(m) {
    // Multi-tensor Lion step, in place (params and exp_avgs are updated).
    m.def("fused_lion_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, float lr, float beta1, "
          "float beta2, float weight_decay) -> ()");
}

ACCELOPS_LIBRARY_IMPL(CUDA, m) {
    m.impl("fused_lion_step", TORCH_BOX(&fused_lion_step));
}
