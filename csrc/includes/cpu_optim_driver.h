// Multi-tensor driver shared by the CPU optimizer bindings: checks the tensor lists, splits every
// tensor into blocks, runs the blocks in one OpenMP loop and dispatches each block on its
// (param, grad, copy) dtypes. Include only from a binding .cpp. Torch's stable ABI only
// (torch::stable::Tensor; no ATen, c10 or Python headers), so it builds under -DTORCH_STABLE_ONLY.
#pragma once
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/Layout.h>
#include <torch/headeronly/core/ScalarType.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cpu_optim_kernels.h"

namespace accelops_cpu {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr int64_t kBlock = int64_t(1) << 16;     // elements per work item (a multiple of every width)
constexpr int64_t kParallelMin = int64_t(1) << 15;  // below this many elements in total, stay serial

inline bool is_float_type(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::BFloat16 || t == ScalarType::Half;
}
inline bool is_low_type(ScalarType t) { return t == ScalarType::BFloat16 || t == ScalarType::Half; }

// Error messages without STD_TORCH_CHECK's variadic ostringstream template (one instantiation per argument
// list, a noticeable share of the compile time): OPTIM_CHECK(cond, op << ": got " << n << ...) builds the
// message with these few non-template overloads, only when the check fails, and throws std::runtime_error
// (a Python RuntimeError), prefixed with the place like STD_TORCH_CHECK.
#if defined(__GNUC__)
#define OPTIM_COLD __attribute__((noinline, cold))
#else
#define OPTIM_COLD __declspec(noinline)
#endif
struct Msg {
  std::string s;
  OPTIM_COLD Msg& operator<<(const char* x) { s += x; return *this; }
  OPTIM_COLD Msg& operator<<(int64_t x) { s += std::to_string(x); return *this; }
  OPTIM_COLD Msg& operator<<(size_t x) { s += std::to_string(x); return *this; }
  OPTIM_COLD Msg& operator<<(double x) {  // as std::ostream prints it (%g)
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", x);
    s += buf;
    return *this;
  }
  OPTIM_COLD Msg& operator<<(ScalarType t) { s += torch::headeronly::toString(t); return *this; }
};
[[noreturn]] OPTIM_COLD inline void fail(const char* func, const char* file, int line, const Msg& m) {
  throw std::runtime_error(std::string(func) + ", " + file + ":" + std::to_string(line) + ", " + m.s);
}
#define OPTIM_CHECK(cond, parts)                                                                        \
  do {                                                                                                  \
    if (!(cond)) ::accelops_cpu::fail(__func__, __FILE__, __LINE__, ::accelops_cpu::Msg() << parts);     \
  } while (0)

// Throws (Python RuntimeError) on anything the kernels cannot update in place.
// The dtype combinations are those of the Python validator (cpu_optim_validate.check_param): without
// copies, params fp32/bf16/fp16 with grads of the param dtype or fp32; with copies, fp32 params, bf16/fp16
// copies and grads of fp32 or the copy's dtype. Only these are instantiated (see dispatch below).
inline void check_lists(const char* op, const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                        const std::vector<const std::vector<Tensor>*>& states, const std::vector<Tensor>& copies) {
  const size_t n = params.size();
  OPTIM_CHECK(grads.size() == n, op << ": got " << n << " params but " << grads.size() << " grads");
  for (auto* s : states)
    OPTIM_CHECK(s->size() == n, op << ": got " << n << " params but " << s->size() << " state tensors");
  OPTIM_CHECK(copies.empty() || copies.size() == n, op << ": param_copies must be empty or one per param, got "
                                                       << copies.size() << " for " << n << " params");
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = params[i];
    std::vector<std::pair<const char*, const Tensor*>> all = {{"param", &p}, {"grad", &grads[i]}};
    for (auto* s : states) all.push_back({"state", &(*s)[i]});
    if (!copies.empty()) all.push_back({"param copy", &copies[i]});
    for (auto& kv : all) {
      const Tensor& t = *kv.second;
      OPTIM_CHECK(t.is_cpu(), op << ": " << kv.first << " " << i << " must be on the CPU");
      OPTIM_CHECK(t.layout() == torch::headeronly::Layout::Strided,
                  op << ": " << kv.first << " " << i << " must be dense (strided)");
      OPTIM_CHECK(t.is_contiguous(), op << ": " << kv.first << " " << i << " must be contiguous (updated in place)");
      OPTIM_CHECK(t.numel() == p.numel(), op << ": " << kv.first << " " << i << " has " << t.numel()
                                             << " elements, param has " << p.numel());
      OPTIM_CHECK(is_float_type(t.scalar_type()),
                  op << ": " << kv.first << " " << i << " must be float32, bfloat16 or float16, got " << t.scalar_type());
    }
    for (auto* s : states)
      OPTIM_CHECK((*s)[i].scalar_type() == ScalarType::Float,
                  op << ": state " << i << " must be float32, got " << (*s)[i].scalar_type());
    const ScalarType pt = p.scalar_type(), gt = grads[i].scalar_type();
    if (copies.empty()) {
      OPTIM_CHECK(gt == pt || gt == ScalarType::Float, op << ": grad " << i << " must have the param's dtype (" << pt
                                                          << ") or float32, got " << gt);
    } else {
      const ScalarType ct = copies[i].scalar_type();
      OPTIM_CHECK(pt == ScalarType::Float && is_low_type(ct),
                  op << ": param copy " << i << " must be bfloat16 or float16 with a float32 param (the master weights), "
                     << "got a " << ct << " copy of a " << pt << " param");
      OPTIM_CHECK(gt == ScalarType::Float || gt == ct,
                  op << ": grad " << i << " must be float32 or the param copy's dtype (" << ct << "), got " << gt);
    }
  }
}

// Pointer + dtype of one tensor, read on the calling thread (no shim calls inside the OpenMP region).
struct Ptr {
  void* p = nullptr;
  ScalarType t = ScalarType::Float;
};
inline Ptr ptr_of(const Tensor& t) { return {t.mutable_data_ptr(), t.scalar_type()}; }

// Calls f(P*, G*, C*) with the typed pointers of one (param, grad, copy) triple; `c.p == nullptr` means
// no copy (C = NoCopy). Only the combinations check_lists admits are instantiated: 5 without a copy,
// 4 with one (not 3 x 3 x 4), which keeps the compile time down.
template <typename F>
inline void dispatch(const Ptr& p, const Ptr& g, const Ptr& c, NoCopy* none, F&& f) {
  const bool g32 = g.t == ScalarType::Float;
  if (c.p == nullptr) {
    switch (p.t) {
      case ScalarType::Float: f(static_cast<float*>(p.p), static_cast<float*>(g.p), none); break;
      case ScalarType::BFloat16:
        if (g32) f(static_cast<bf16*>(p.p), static_cast<float*>(g.p), none);
        else f(static_cast<bf16*>(p.p), static_cast<bf16*>(g.p), none);
        break;
      default:
        if (g32) f(static_cast<fp16*>(p.p), static_cast<float*>(g.p), none);
        else f(static_cast<fp16*>(p.p), static_cast<fp16*>(g.p), none);
        break;
    }
  } else {
    float* pp = static_cast<float*>(p.p);
    if (c.t == ScalarType::BFloat16) {
      if (g32) f(pp, static_cast<float*>(g.p), static_cast<bf16*>(c.p));
      else f(pp, static_cast<bf16*>(g.p), static_cast<bf16*>(c.p));
    } else {
      if (g32) f(pp, static_cast<float*>(g.p), static_cast<fp16*>(c.p));
      else f(pp, static_cast<fp16*>(g.p), static_cast<fp16*>(c.p));
    }
  }
}

struct BlockItem { int64_t tensor, begin, count; };  // one work item of run_blocks

// Runs update(p, g, s1, s2, copy, n, args[i]) over all tensors, blockwise, in parallel.
// `update` is a generic callable; s2 may be absent (nullptr) for single-state optimizers.
// Call check_lists first: this trusts the dtypes, sizes and list lengths.
template <typename Args, typename Update>
inline void run_blocks(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                       const std::vector<Tensor>& s1, const std::vector<Tensor>* s2,
                       const std::vector<Tensor>& copies, const std::vector<Args>& args, Update update) {
  const int64_t nt = int64_t(params.size());
  std::vector<Ptr> pp(nt), gp(nt), cp(nt);
  std::vector<float*> m1(nt), m2(nt, nullptr);
  std::vector<BlockItem> items;
  int64_t total = 0;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t n = params[t].numel();
    if (n == 0) continue;
    pp[t] = ptr_of(params[t]);
    gp[t] = ptr_of(grads[t]);
    m1[t] = static_cast<float*>(s1[t].mutable_data_ptr());
    if (s2) m2[t] = static_cast<float*>((*s2)[t].mutable_data_ptr());
    if (!copies.empty()) cp[t] = ptr_of(copies[t]);
    total += n;
    for (int64_t b = 0; b < n; b += kBlock) items.push_back({t, b, std::min(kBlock, n - b)});
  }
  const int64_t count = int64_t(items.size());
  auto run = [&](int64_t k) {
    const BlockItem& it = items[k];
    const int64_t off = it.begin;
    float* m = m1[it.tensor] + off;
    float* v = m2[it.tensor] ? m2[it.tensor] + off : nullptr;
    const Args& a = args[it.tensor];
    NoCopy none;
    dispatch(pp[it.tensor], gp[it.tensor], cp[it.tensor], &none, [&](auto* p, auto* g, auto* c) {
      update(p + off, g + off, m, v, advance(c, off), it.count, a);
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
