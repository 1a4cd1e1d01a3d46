// Binding of the CPU Lion op: one multi-tensor step over params, grads, fp32 `exp_avg` states and
// (optionally) low-precision param copies written in the same pass. Torch's stable ABI: Python calls
// torch.ops.<module name>.lion_step (the op builder's loader hands it out as module.lion_step).
#include "accelops_stable.h"
#include "cpu_optim_driver.h"

namespace {

using namespace accelops_cpu;

// In place: params, exp_avgs (and param_copies when not empty).
void lion_step(std::vector<Tensor> params, std::vector<Tensor> grads, std::vector<Tensor> exp_avgs,
               std::vector<Tensor> param_copies, double lr, double beta1, double beta2, double weight_decay,
               bool maximize) {
  check_lists("cpu_lion", params, grads, {&exp_avgs}, param_copies);
  const double decay = weight_decay != 0.0 ? 1.0 - lr * weight_decay : 1.0;  // no inf * 0 for lr=inf
  LionArgs a{float(lr), float(beta1), float(beta2), float(decay), maximize};
  std::vector<LionArgs> args(params.size(), a);
  run_blocks(params, grads, exp_avgs, nullptr, param_copies, args,
             [](auto* p, auto* g, float* m, float* unused, auto* c, int64_t n, const LionArgs& a) {
               lion_update(p, g, m, unused, c, n, a);
             });
}

// Elements per SIMD vector of this build's CPU tier (was the pybind module attribute `simd_width`).
int64_t simd_width() { return kWidth; }

}  // namespace

// The schema's types must match the C++ signature exactly (float = double, int = int64_t): nothing checks it.
ACCELOPS_LIBRARY(m) {
  m.def("lion_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] param_copies, "
        "float lr, float beta1, float beta2, float weight_decay, bool maximize) -> ()");
  m.def("simd_width() -> int");
}

ACCELOPS_LIBRARY_IMPL(CPU, m) { m.impl("lion_step", TORCH_BOX(&lion_step)); }

// No tensor arguments, so no dispatch key to pick CPU from.
ACCELOPS_LIBRARY_IMPL(CompositeExplicitAutograd, m) { m.impl("simd_width", TORCH_BOX(&simd_width)); }
