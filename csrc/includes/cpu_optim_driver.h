// Multi-tensor driver shared by the CPU optimizer bindings: checks the tensor lists, splits every
// tensor into blocks, runs the blocks in one OpenMP loop and dispatches each block on its
// (param, grad, copy) dtypes. Include only from a binding .cpp (it pulls in ATen and pybind11).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>  // Tensor and std::vector casters; far lighter than torch/extension.h

#include <string>
#include <vector>

#include "cpu_optim_kernels.h"

namespace accelops_cpu {

constexpr int64_t kBlock = int64_t(1) << 16;     // elements per work item (a multiple of every width)
constexpr int64_t kParallelMin = int64_t(1) << 15;  // below this many elements in total, stay serial

inline bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

// Throws (Python RuntimeError/ValueError via TORCH_CHECK) on anything the kernels cannot update in place.
inline void check_lists(const char* op, const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                        const std::vector<std::vector<at::Tensor>*>& states, const std::vector<at::Tensor>& copies) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n, op, ": got ", n, " params but ", grads.size(), " grads");
  for (auto* s : states) TORCH_CHECK(s->size() == n, op, ": got ", n, " params but ", s->size(), " state tensors");
  TORCH_CHECK(copies.empty() || copies.size() == n, op, ": param_copies must be empty or one per param, got ",
              copies.size(), " for ", n, " params");
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    std::vector<std::pair<const char*, const at::Tensor*>> all = {{"param", &p}, {"grad", &grads[i]}};
    for (auto* s : states) all.push_back({"state", &(*s)[i]});
    if (!copies.empty()) all.push_back({"param copy", &copies[i]});
    for (auto& kv : all) {
      const at::Tensor& t = *kv.second;
      TORCH_CHECK(t.device().is_cpu(), op, ": ", kv.first, " ", i, " must be on the CPU, got ", t.device());
      TORCH_CHECK(t.layout() == at::kStrided, op, ": ", kv.first, " ", i, " must be dense, got ", t.layout());
      TORCH_CHECK(t.is_contiguous(), op, ": ", kv.first, " ", i, " must be contiguous (updated in place)");
      TORCH_CHECK(t.numel() == p.numel(), op, ": ", kv.first, " ", i, " has ", t.numel(), " elements, param has ",
                  p.numel());
      TORCH_CHECK(is_float_type(t.scalar_type()), op, ": ", kv.first, " ", i,
                  " must be float32, bfloat16 or float16, got ", t.scalar_type());
    }
    for (auto* s : states)
      TORCH_CHECK((*s)[i].scalar_type() == at::kFloat, op, ": state ", i, " must be float32, got ",
                  (*s)[i].scalar_type());
  }
}

template <typename F>
inline void with_type(const at::Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: f(t.data_ptr<float>()); break;
    case at::kBFloat16: f(reinterpret_cast<bf16*>(t.data_ptr<at::BFloat16>())); break;
    default: f(reinterpret_cast<fp16*>(t.data_ptr<at::Half>())); break;
  }
}

struct BlockItem { int64_t tensor, begin, count; };  // one work item of run_blocks

// Runs update(p, g, s1, s2, copy, n, args[i]) over all tensors, blockwise, in parallel.
// `update` is a generic callable; s2 may be absent (nullptr) for single-state optimizers.
template <typename Args, typename Update>
inline void run_blocks(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                       const std::vector<at::Tensor>& s1, const std::vector<at::Tensor>* s2,
                       const std::vector<at::Tensor>& copies, const std::vector<Args>& args, Update update) {
  std::vector<BlockItem> items;
  int64_t total = 0;
  for (int64_t t = 0; t < int64_t(params.size()); ++t) {
    const int64_t n = params[t].numel();
    total += n;
    for (int64_t b = 0; b < n; b += kBlock) items.push_back({t, b, std::min(kBlock, n - b)});
  }
  const int64_t count = int64_t(items.size());
  auto run = [&](int64_t k) {
    const BlockItem& it = items[k];
    const int64_t off = it.begin;
    float* m = s1[it.tensor].data_ptr<float>() + off;
    float* v = s2 ? (*s2)[it.tensor].data_ptr<float>() + off : nullptr;
    const Args& a = args[it.tensor];
    with_type(params[it.tensor], [&](auto* p) {
      with_type(grads[it.tensor], [&](auto* g) {
        if (copies.empty()) {
          NoCopy none;
          update(p + off, g + off, m, v, &none, it.count, a);
        } else {
          with_type(copies[it.tensor], [&](auto* c) { update(p + off, g + off, m, v, c + off, it.count, a); });
        }
      });
    });
  };
  if (total < kParallelMin) {
    for (int64_t k = 0; k < count; ++k) run(k);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < count; ++k) run(k);
  }
}

}  // namespace accelops_cpu
