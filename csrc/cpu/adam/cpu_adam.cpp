// Binding of the CPU Adam/AdamW op: one multi-tensor step over lists of params, grads, fp32 states
// and (optionally) low-precision param copies written in the same pass. Torch's stable ABI: Python
// calls torch.ops.<module name>.adam_step (the op builder's loader hands it out as module.adam_step).
#include <cmath>

#include "accelops_stable.h"
#include "cpu_optim_driver.h"

namespace {

using namespace accelops_cpu;

// In place: params, exp_avgs, exp_avg_sqs (and param_copies when not empty). `steps[i]` is tensor
// i's step count after this step (>= 1). Throws on lists the kernel cannot update in place.
void adam_step(std::vector<Tensor> params, std::vector<Tensor> grads, std::vector<Tensor> exp_avgs,
               std::vector<Tensor> exp_avg_sqs, std::vector<Tensor> param_copies, std::vector<double> steps,
               double lr, double beta1, double beta2, double eps, double weight_decay, bool adamw,
               bool bias_correction, bool maximize) {
  check_lists("cpu_adam", params, grads, {&exp_avgs, &exp_avg_sqs}, param_copies);
  OPTIM_CHECK(steps.size() == params.size(), "cpu_adam: need one step count per param");
  std::vector<AdamArgs> args;
  for (double t : steps) {
    OPTIM_CHECK(t >= 1, "cpu_adam: step counts must be >= 1, got " << t);
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

// Elements per SIMD vector of this build's CPU tier (was the pybind module attribute `simd_width`).
int64_t simd_width() { return kWidth; }

}  // namespace

// The schema's types must match the C++ signature exactly (float = double, int = int64_t): nothing checks it.
ACCELOPS_LIBRARY(m) {
  m.def("adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
        "Tensor(d!)[] param_copies, float[] steps, float lr, float beta1, float beta2, float eps, "
        "float weight_decay, bool adamw, bool bias_correction, bool maximize) -> ()");
  m.def("simd_width() -> int");
}

ACCELOPS_LIBRARY_IMPL(CPU, m) { m.impl("adam_step", TORCH_BOX(&adam_step)); }

// No tensor arguments, so no dispatch key to pick CPU from.
ACCELOPS_LIBRARY_IMPL(CompositeExplicitAutograd, m) { m.impl("simd_width", TORCH_BOX(&simd_width)); }
