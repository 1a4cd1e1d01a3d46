// Binding of the CPU fused residual-add + layer norm op: checks, output allocation, dtype code.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <optional>
#include <tuple>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu_layer_norm.h"

namespace {

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return 0;
    case at::kBFloat16: return 1;
    case at::kHalf: return 2;
    default: TORCH_CHECK(false, "cpu_layer_norm: expected float32, bfloat16 or float16, got ", t.scalar_type());
  }
  return -1;
}

void check(const at::Tensor& t, const char* name, const at::Tensor& like, int64_t numel) {
  TORCH_CHECK(t.device().is_cpu() && t.layout() == at::kStrided, "cpu_layer_norm: ", name,
              " must be a dense CPU tensor");
  TORCH_CHECK(t.is_contiguous(), "cpu_layer_norm: ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "cpu_layer_norm: ", name, " has dtype ", t.scalar_type(),
              ", expected ", like.scalar_type());
  TORCH_CHECK(t.numel() == numel, "cpu_layer_norm: ", name, " has ", t.numel(), " elements, expected ", numel);
}

// glibc serves every allocation of 32 MiB or more (its largest mmap threshold on 64-bit) with a fresh
// mmap, so writing such an output faults in one zeroed 4 KiB page at a time, which costs more than the
// kernel itself. Advise their 2 MiB-aligned interior as transparent huge pages (honoured when THP is in
// "madvise" or "always" mode; only advice, so a failure changes nothing). Smaller outputs usually reuse
// heap memory that is already mapped; measured, advising those only slowed them down.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kAlwaysMmapped = size_t(32) << 20;
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (t.nbytes() < kAlwaysMmapped) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

// Returns (y, s, mean, rstd); s is a 0-element tensor without residual.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fwd(const at::Tensor& x,
                                                               const std::optional<at::Tensor>& residual,
                                                               const at::Tensor& weight, const at::Tensor& bias,
                                                               double eps) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, "cpu_layer_norm: x must be [..., N] with N > 0");
  const int64_t n = x.size(-1), rows = x.numel() / n;
  check(x, "x", x, x.numel());
  check(weight, "weight", x, n);
  check(bias, "bias", x, n);
  const bool has_res = residual.has_value();
  if (has_res) check(*residual, "residual", x, x.numel());
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor s = has_res ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options());
  advise_huge_pages(y);
  advise_huge_pages(s);
  at::Tensor mean = at::empty({rows}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
  accelops_cpu::add_layer_norm_forward(dtype_code(x), x.data_ptr(), has_res ? residual->data_ptr() : nullptr,
                                       weight.data_ptr(), bias.data_ptr(), y.data_ptr(),
                                       has_res ? s.data_ptr() : nullptr, mean.data_ptr<float>(),
                                       rstd.data_ptr<float>(), rows, n, float(eps));
  return {y, s, mean, rstd};
}

// Returns (grad_input, grad_weight, grad_bias).
std::tuple<at::Tensor, at::Tensor, at::Tensor> bwd(const at::Tensor& grad_y, const at::Tensor& input,
                                                   const at::Tensor& mean, const at::Tensor& rstd,
                                                   const at::Tensor& weight) {
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) > 0, "cpu_layer_norm: input must be [..., N] with N > 0");
  const int64_t n = input.size(-1), rows = input.numel() / n;
  check(input, "input", input, input.numel());
  check(grad_y, "grad_y", input, input.numel());
  check(weight, "weight", input, n);
  check(mean, "mean", mean, rows);
  check(rstd, "rstd", mean, rows);
  TORCH_CHECK(mean.scalar_type() == at::kFloat, "cpu_layer_norm: mean/rstd must be float32");
  at::Tensor gi = at::empty(input.sizes(), input.options());
  advise_huge_pages(gi);
  at::Tensor gw = at::empty({n}, weight.options());
  at::Tensor gb = at::empty({n}, weight.options());
  accelops_cpu::add_layer_norm_backward(dtype_code(input), grad_y.data_ptr(), input.data_ptr(),
                                        mean.data_ptr<float>(), rstd.data_ptr<float>(), weight.data_ptr(),
                                        gi.data_ptr(), gw.data_ptr(), gb.data_ptr(), rows, n);
  return {gi, gw, gb};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("add_layer_norm_fwd", &fwd, "Fused residual add + layer norm forward (CPU)");
  m.def("add_layer_norm_bwd", &bwd, "Fused layer norm backward (CPU)");
}
