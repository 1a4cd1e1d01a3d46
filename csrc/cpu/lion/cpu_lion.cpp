// Binding of the CPU Lion op: one multi-tensor step over params, grads, fp32 `exp_avg` states and
// (optionally) low-precision param copies written in the same pass.
#include "cpu_optim_driver.h"

namespace {

using namespace accelops_cpu;

// In place: params, exp_avgs (and param_copies when not empty).
void lion_step(std::vector<at::Tensor> params, std::vector<at::Tensor> grads, std::vector<at::Tensor> exp_avgs,
               std::vector<at::Tensor> param_copies, double lr, double beta1, double beta2, double weight_decay,
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lion_step", &lion_step, "Multi-tensor Lion step on CPU tensors (in place)");
  m.attr("simd_width") = accelops_cpu::kWidth;
}
