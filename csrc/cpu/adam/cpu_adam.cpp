// Binding of the CPU Adam/AdamW op: one multi-tensor step over lists of params, grads, fp32 states
// and (optionally) low-precision param copies written in the same pass.
#include <cmath>

#include "cpu_optim_driver.h"

namespace {

using namespace accelops_cpu;

// In place: params, exp_avgs, exp_avg_sqs (and param_copies when not empty). `steps[i]` is tensor
// i's step count after this step (>= 1). Throws on lists the kernel cannot update in place.
void adam_step(std::vector<at::Tensor> params, std::vector<at::Tensor> grads, std::vector<at::Tensor> exp_avgs,
               std::vector<at::Tensor> exp_avg_sqs, std::vector<at::Tensor> param_copies, std::vector<double> steps,
               double lr, double beta1, double beta2, double eps, double weight_decay, bool adamw,
               bool bias_correction, bool maximize) {
  check_lists("cpu_adam", params, grads, {&exp_avgs, &exp_avg_sqs}, param_copies);
  TORCH_CHECK(steps.size() == params.size(), "cpu_adam: need one step count per param");
  std::vector<AdamArgs> args;
  for (double t : steps) {
    TORCH_CHECK(t >= 1, "cpu_adam: step counts must be >= 1, got ", t);
    AdamArgs a;
    a.beta1 = float(beta1);
    a.beta2 = float(beta2);
    a.eps = float(eps);
    a.weight_decay = float(weight_decay);
    a.decay = (adamw && weight_decay != 0.0) ? float(1.0 - lr * weight_decay) : 1.f;  // no inf * 0 for lr=inf (as torch)
    a.step_size = float(bias_correction ? lr / (1.0 - std::pow(beta1, t)) : lr);
    a.bc2_sqrt = float(bias_correction ? std::sqrt(1.0 - std::pow(beta2, t)) : 1.0);
    a.l2 = !adamw && weight_decay != 0.0;
    a.maximize = maximize;
    args.push_back(a);
  }
  run_blocks(params, grads, exp_avgs, &exp_avg_sqs, param_copies, args,
             [](auto* p, auto* g, float* m, float* v, auto* c, int64_t n, const AdamArgs& a) {
               adam_update(p, g, m, v, c, n, a);
             });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("adam_step", &adam_step, "Multi-tensor Adam/AdamW step on CPU tensors (in place)");
  m.attr("simd_width") = accelops_cpu::kWidth;
}
