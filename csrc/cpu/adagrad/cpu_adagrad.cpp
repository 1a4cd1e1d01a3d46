// Binding of the CPU Adagrad op: one multi-tensor step over params, grads, fp32 `sum` states and
// (optionally) low-precision param copies written in the same pass. Torch's stable ABI: Python calls
// torch.ops.<module name>.adagrad_step (the op builder's loader hands it out as module.adagrad_step).
#include "accelops_stable.h"
#include "cpu_optim_driver.h"

namespace {

using namespace accelops_cpu;

// In place: params, state_sums (and param_copies when not empty). `steps[i]` is tensor i's step
// count after this step (>= 1); the learning rate is lr / (1 + (step - 1) * lr_decay) as in torch.
void adagrad_step(std::vector<Tensor> params, std::vector<Tensor> grads, std::vector<Tensor> state_sums,
                  std::vector<Tensor> param_copies, std::vector<double> steps, double lr, double lr_decay,
                  double eps, double weight_decay, bool maximize) {
  check_lists("cpu_adagrad", params, grads, {&state_sums}, param_copies);
  OPTIM_CHECK(steps.size() == params.size(), "cpu_adagrad: need one step count per param");
  std::vector<AdagradArgs> args;
  for (double t : steps) {
    OPTIM_CHECK(t >= 1, "cpu_adagrad: step counts must be >= 1, got " << t);
    args.push_back({float(lr / (1.0 + (t - 1.0) * lr_decay)), float(eps), float(weight_decay), maximize});
  }
  run_blocks(params, grads, state_sums, nullptr, param_copies, args,
             [](auto* p, auto* g, float* s, float* unused, auto* c, int64_t n, const AdagradArgs& a) {
               adagrad_update(p, g, s, unused, c, n, a);
             });
}

// Elements per SIMD vector of this build's CPU tier (was the pybind module attribute `simd_width`).
int64_t simd_width() { return kWidth; }

}  // namespace

// The schema's types must match the C++ signature exactly (float = double, int = int64_t): nothing checks it.
ACCELOPS_LIBRARY(m) {
  m.def("adagrad_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] state_sums, Tensor(c!)[] param_copies, "
        "float[] steps, float lr, float lr_decay, float eps, float weight_decay, bool maximize) -> ()");
  m.def("simd_width() -> int");
}

ACCELOPS_LIBRARY_IMPL(CPU, m) { m.impl("adagrad_step", TORCH_BOX(&adagrad_step)); }

// No tensor arguments, so no dispatch key to pick CPU from.
ACCELOPS_LIBRARY_IMPL(CompositeExplicitAutograd, m) { m.impl("simd_width", TORCH_BOX(&simd_width)); }
