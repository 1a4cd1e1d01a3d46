// Binding of the CPU fused residual-add + layer norm op (torch stable ABI): checks, output allocation,
// dtype code. The kernels are in cpu_layer_norm_kernel.cpp (no torch headers).
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <cstdint>
#include <optional>
#include <tuple>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "accelops_stable.h"
#include "cpu_layer_norm.h"

namespace {

using torch::headeronly::Layout;
using torch::headeronly::ScalarType;
using torch::stable::Tensor;

int dtype_code(const Tensor& t) {
  switch (t.scalar_type()) {
    case ScalarType::Float: return 0;
    case ScalarType::BFloat16: return 1;
    case ScalarType::Half: return 2;
    default:
      STD_TORCH_CHECK(false, "cpu_layer_norm: expected float32, bfloat16 or float16, got ",
                      torch::headeronly::toString(t.scalar_type()));
  }
  return -1;
}

void check(const Tensor& t, const char* name, const Tensor& like, int64_t numel) {
  STD_TORCH_CHECK(t.is_cpu() && t.layout() == Layout::Strided, "cpu_layer_norm: ", name,
                  " must be a dense CPU tensor");
  STD_TORCH_CHECK(t.is_contiguous(), "cpu_layer_norm: ", name, " must be contiguous");
  STD_TORCH_CHECK(t.scalar_type() == like.scalar_type(), "cpu_layer_norm: ", name, " has dtype ",
                  torch::headeronly::toString(t.scalar_type()), ", expected ",
                  torch::headeronly::toString(like.scalar_type()));
  STD_TORCH_CHECK(t.numel() == numel, "cpu_layer_norm: ", name, " has ", t.numel(), " elements, expected ", numel);
}

// glibc serves every allocation of 32 MiB or more (its largest mmap threshold on 64-bit) with a fresh
// mmap, so writing such an output faults in one zeroed 4 KiB page at a time, which costs more than the
// kernel itself. Advise their 2 MiB-aligned interior as transparent huge pages (honoured when THP is in
// "madvise" or "always" mode; only advice, so a failure changes nothing). Smaller outputs usually reuse
// heap memory that is already mapped; measured, advising those only slowed them down.
void advise_huge_pages(const Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kAlwaysMmapped = size_t(32) << 20;
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const size_t nbytes = size_t(t.numel()) * t.element_size();
  if (nbytes < kAlwaysMmapped) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + nbytes) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

float* f32_ptr(Tensor& t) { return static_cast<float*>(t.mutable_data_ptr()); }
const float* f32_ptr(const Tensor& t) { return static_cast<const float*>(t.const_data_ptr()); }

// Returns (y, s, mean, rstd); s is a 0-element tensor without residual.
std::tuple<Tensor, Tensor, Tensor, Tensor> fwd(const Tensor& x, const std::optional<Tensor>& residual,
                                               const Tensor& weight, const Tensor& bias, double eps) {
  STD_TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, "cpu_layer_norm: x must be [..., N] with N > 0");
  const int64_t n = x.size(-1), rows = x.numel() / n;
  check(x, "x", x, x.numel());
  check(weight, "weight", x, n);
  check(bias, "bias", x, n);
  const bool has_res = residual.has_value();
  if (has_res) check(*residual, "residual", x, x.numel());
  Tensor y = torch::stable::new_empty(x, x.sizes());
  Tensor s = torch::stable::new_empty(x, has_res ? x.sizes() : torch::headeronly::IntHeaderOnlyArrayRef({0}));
  advise_huge_pages(y);
  advise_huge_pages(s);
  Tensor mean = torch::stable::new_empty(x, {rows}, ScalarType::Float);
  Tensor rstd = torch::stable::new_empty(x, {rows}, ScalarType::Float);
  accelops_cpu::add_layer_norm_forward(dtype_code(x), x.const_data_ptr(),
                                       has_res ? residual->const_data_ptr() : nullptr, weight.const_data_ptr(),
                                       bias.const_data_ptr(), y.mutable_data_ptr(),
                                       has_res ? s.mutable_data_ptr() : nullptr, f32_ptr(mean), f32_ptr(rstd), rows,
                                       n, float(eps));
  return {y, s, mean, rstd};
}

// Returns (grad_input, grad_weight, grad_bias).
std::tuple<Tensor, Tensor, Tensor> bwd(const Tensor& grad_y, const Tensor& input, const Tensor& mean,
                                       const Tensor& rstd, const Tensor& weight) {
  STD_TORCH_CHECK(input.dim() >= 1 && input.size(-1) > 0, "cpu_layer_norm: input must be [..., N] with N > 0");
  const int64_t n = input.size(-1), rows = input.numel() / n;
  check(input, "input", input, input.numel());
  check(grad_y, "grad_y", input, input.numel());
  check(weight, "weight", input, n);
  check(mean, "mean", mean, rows);
  check(rstd, "rstd", mean, rows);
  STD_TORCH_CHECK(mean.scalar_type() == ScalarType::Float, "cpu_layer_norm: mean/rstd must be float32");
  Tensor gi = torch::stable::new_empty(input, input.sizes());
  advise_huge_pages(gi);
  Tensor gw = torch::stable::new_empty(weight, {n});
  Tensor gb = torch::stable::new_empty(weight, {n});
  accelops_cpu::add_layer_norm_backward(dtype_code(input), grad_y.const_data_ptr(), input.const_data_ptr(),
                                        f32_ptr(mean), f32_ptr(rstd), weight.const_data_ptr(),
                                        gi.mutable_data_ptr(), gw.mutable_data_ptr(), gb.mutable_data_ptr(), rows,
                                        n);
  return {gi, gw, gb};
}

}  // namespace

ACCELOPS_LIBRARY(m) {
  // Fused residual add + layer norm forward (CPU); s is a 0-element tensor without residual.
  m.def("add_layer_norm_fwd(Tensor x, Tensor? residual, Tensor weight, Tensor bias, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  // Fused layer norm backward (CPU): (grad_input, grad_weight, grad_bias).
  m.def("add_layer_norm_bwd(Tensor grad_y, Tensor input, Tensor mean, Tensor rstd, Tensor weight) "
        "-> (Tensor, Tensor, Tensor)");
}

ACCELOPS_LIBRARY_IMPL(CPU, m) {
  m.impl("add_layer_norm_fwd", TORCH_BOX(&fwd));
  m.impl("add_layer_norm_bwd", TORCH_BOX(&bwd));
}
