// Binding of the CPU Adagrad op: one multi-tensor step over params, grads, fp32 `sum` states and
// (optionally) low-precision param copies written in the same pass.
#include "cpu_optim_driver.h"

namespace {

using namespace accelops_cpu;

// In place: params, state_sums (and param_copies when not empty). `steps[i]` is tensor i's step
// count after this step (>= 1); the learning rate is lr / (1 + (step - 1) * lr_decay) as in torch.
void adagrad_step(std::vector<at::Tensor> params, std::vector<at::Tensor> grads, std::vector<at::Tensor> state_sums,
                  std::vector<at::Tensor> param_copies, std::vector<double> steps, double lr, double lr_decay,
                  double eps, double weight_decay, bool maximize) {
  check_lists("cpu_adagrad", params, grads, {&state_sums}, param_copies);
  TORCH_CHECK(steps.size() == params.size(), "cpu_adagrad: need one step count per param");
  std::vector<AdagradArgs> args;
  for (double t : steps) {
    TORCH_CHECK(t >= 1, "cpu_adagrad: step counts must be >= 1, got ", t);
    args.push_back({float(lr / (1.0 + (t - 1.0) * lr_decay)), float(eps), float(weight_decay), maximize});
  }
  run_blocks(params, grads, state_sums, nullptr, param_copies, args,
             [](auto* p, auto* g, float* s, float* unused, auto* c, int64_t n, const AdagradArgs& a) {
               adagrad_update(p, g, s, unused, c, n, a);
             });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("adagrad_step", &adagrad_step, "Multi-tensor Adagrad step on CPU tensors (in place)");
  m.attr("simd_width") = accelops_cpu::kWidth;
}
