// Binding of the CPU MoE dispatch/combine op (torch stable ABI): checks, output allocation, dtype code.
// The kernels are in cpu_moe_dispatch_kernel.cpp (no torch headers). accelops.ops.moe_dispatch validates
// every input in Python first (messages naming shapes, dtypes and the route at fault); the checks here
// are the last line, so that no input reaches a kernel that would read or write out of bounds.
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "accelops_stable.h"
#include "cpu_moe_dispatch.h"

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
      STD_TORCH_CHECK(false, "cpu_moe_dispatch: expected float32, bfloat16 or float16, got ",
                      torch::headeronly::toString(t.scalar_type()));
  }
  return -1;
}

void check_dense(const Tensor& t, const char* name) {
  STD_TORCH_CHECK(t.is_cpu() && t.layout() == Layout::Strided && t.is_contiguous(), "cpu_moe_dispatch: ", name,
                  " must be a contiguous CPU tensor");
}

// The routes' tensors ([k, S] int32, and an optional float32 weight of that shape), in range; returns k.
int64_t check_routes(const Tensor& expert, const Tensor& slot, const std::optional<Tensor>& weight, int64_t tokens,
                     int64_t num_experts, int64_t capacity) {
  check_dense(expert, "expert");
  check_dense(slot, "slot");
  STD_TORCH_CHECK(expert.scalar_type() == ScalarType::Int && slot.scalar_type() == ScalarType::Int,
                  "cpu_moe_dispatch: expert and slot must be int32");
  STD_TORCH_CHECK(expert.dim() == 2 && expert.size(1) == tokens && slot.sizes() == expert.sizes(),
                  "cpu_moe_dispatch: expert and slot must have shape [k, S]");
  if (weight.has_value()) {
    check_dense(*weight, "gate");
    STD_TORCH_CHECK(weight->scalar_type() == ScalarType::Float && weight->sizes() == expert.sizes(),
                    "cpu_moe_dispatch: gate must be float32 of expert's shape [k, S]");
  }
  STD_TORCH_CHECK(num_experts >= 0 && capacity >= 0 && num_experts * capacity < (int64_t(1) << 31) &&
                      expert.numel() < (int64_t(1) << 31),
                  "cpu_moe_dispatch: E * C and k * S must be below 2**31");
  const int64_t bad = accelops_cpu::moe_first_bad_route(static_cast<const int32_t*>(expert.const_data_ptr()),
                                                        static_cast<const int32_t*>(slot.const_data_ptr()),
                                                        expert.numel(), num_experts, capacity);
  STD_TORCH_CHECK(bad < 0, "cpu_moe_dispatch: route ", bad, " is out of range (expert in [-1, E), slot in [0, C))");
  return expert.size(0);
}

std::vector<int32_t> sources(const Tensor& expert, const Tensor& slot, int64_t capacity, int64_t rows) {
  std::vector<int32_t> source(size_t(rows > 0 ? rows : 1));
  const int64_t dup = accelops_cpu::moe_build_source(static_cast<const int32_t*>(expert.const_data_ptr()),
                                                     static_cast<const int32_t*>(slot.const_data_ptr()),
                                                     expert.numel(), capacity, rows, source.data());
  STD_TORCH_CHECK(dup < 0, "cpu_moe_dispatch: route ", dup, " targets a buffer row another route already owns");
  return source;
}

const float* f32_or_null(const std::optional<Tensor>& t) {
  return t.has_value() ? static_cast<const float*>(t->const_data_ptr()) : nullptr;
}

// buffer [E, C, M]: buffer[e, c] = tokens[s] (times weight) for the route of token s at (e, c), else zeros.
Tensor moe_dispatch(const Tensor& tokens, const Tensor& expert, const Tensor& slot,
                    const std::optional<Tensor>& weight, int64_t num_experts, int64_t capacity) {
  check_dense(tokens, "tokens");
  STD_TORCH_CHECK(tokens.dim() == 2, "cpu_moe_dispatch: tokens must be [S, M]");
  const int64_t s = tokens.size(0), m = tokens.size(1);
  check_routes(expert, slot, weight, s, num_experts, capacity);
  Tensor buffer = torch::stable::new_empty(tokens, {num_experts, capacity, m});
  const int64_t rows = num_experts * capacity;
  const std::vector<int32_t> source = sources(expert, slot, capacity, rows);
  accelops_cpu::moe_dispatch_rows(dtype_code(tokens), tokens.const_data_ptr(), source.data(), f32_or_null(weight),
                                  buffer.mutable_data_ptr(), rows, s, m);
  return buffer;
}

// out [S, M]: out[s] = sum_k weight[k, s] * expert_output[expert[k, s], slot[k, s]] (float32 sums).
Tensor moe_combine(const Tensor& expert_output, const Tensor& expert, const Tensor& slot,
                   const std::optional<Tensor>& weight) {
  check_dense(expert_output, "expert_output");
  STD_TORCH_CHECK(expert_output.dim() == 3 && expert.dim() == 2, "cpu_moe_dispatch: expert_output must be [E, C, M]");
  const int64_t e = expert_output.size(0), c = expert_output.size(1), m = expert_output.size(2);
  const int64_t s = expert.size(1);
  const int64_t k = check_routes(expert, slot, weight, s, e, c);
  Tensor out = torch::stable::new_empty(expert_output, {s, m});
  accelops_cpu::moe_combine_rows(dtype_code(expert_output), expert_output.const_data_ptr(),
                                 static_cast<const int32_t*>(expert.const_data_ptr()),
                                 static_cast<const int32_t*>(slot.const_data_ptr()), f32_or_null(weight),
                                 out.mutable_data_ptr(), k, s, c, m);
  return out;
}

// (grad_expert_output [E, C, M], grad_gate [k, S] float32) of moe_combine with a gate.
std::tuple<Tensor, Tensor> moe_combine_bwd(const Tensor& grad_out, const Tensor& expert_output, const Tensor& expert,
                                           const Tensor& slot, const Tensor& gate) {
  check_dense(grad_out, "grad_out");
  check_dense(expert_output, "expert_output");
  STD_TORCH_CHECK(expert_output.dim() == 3 && grad_out.dim() == 2 && grad_out.size(1) == expert_output.size(2) &&
                      grad_out.scalar_type() == expert_output.scalar_type(),
                  "cpu_moe_dispatch: grad_out must be [S, M] of expert_output's dtype, expert_output [E, C, M]");
  const int64_t e = expert_output.size(0), c = expert_output.size(1), m = expert_output.size(2);
  const int64_t s = grad_out.size(0);
  check_routes(expert, slot, gate, s, e, c);
  Tensor grad_y = torch::stable::new_empty(expert_output, expert_output.sizes());
  Tensor grad_gate = torch::stable::new_zeros(gate, gate.sizes());
  const int64_t rows = e * c;
  const std::vector<int32_t> source = sources(expert, slot, c, rows);
  accelops_cpu::moe_combine_backward(dtype_code(expert_output), grad_out.const_data_ptr(),
                                     expert_output.const_data_ptr(), source.data(),
                                     static_cast<const float*>(gate.const_data_ptr()), grad_y.mutable_data_ptr(),
                                     static_cast<float*>(grad_gate.mutable_data_ptr()), rows, s, m);
  return {grad_y, grad_gate};
}

}  // namespace

ACCELOPS_LIBRARY(m) {
  // Token rows into the [E, C, M] expert buffer by route (weight: optional float32 [k, S] factor).
  m.def("moe_dispatch(Tensor tokens, Tensor expert, Tensor slot, Tensor? weight, int num_experts, int capacity) "
        "-> Tensor");
  // Gate-weighted sum of each token's expert rows: [S, M].
  m.def("moe_combine(Tensor expert_output, Tensor expert, Tensor slot, Tensor? weight) -> Tensor");
  // Gradients of moe_combine with respect to expert_output and the gate.
  m.def("moe_combine_bwd(Tensor grad_out, Tensor expert_output, Tensor expert, Tensor slot, Tensor gate) "
        "-> (Tensor, Tensor)");
}

ACCELOPS_LIBRARY_IMPL(CPU, m) {
  m.impl("moe_dispatch", TORCH_BOX(&moe_dispatch));
  m.impl("moe_combine", TORCH_BOX(&moe_combine));
  m.impl("moe_combine_bwd", TORCH_BOX(&moe_combine_bwd));
}
