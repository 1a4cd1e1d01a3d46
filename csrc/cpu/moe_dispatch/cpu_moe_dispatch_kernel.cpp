// Kernels of the CPU MoE dispatch/combine (see cpu_moe_dispatch.h). Buffer or token rows are spread over
// OpenMP threads; each row is one pass of SIMD-tier vectors (partial vectors through the tail helpers).
// Gathers only: every output row is written by one thread, so there are no atomics and results do not
// depend on the thread count.
#include "cpu_moe_dispatch.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu_simd.h"

namespace accelops_cpu {
namespace {

template <typename T>
void dispatch(const T* x, const int32_t* source, const float* weight, T* buffer, int64_t rows, int64_t tokens,
              int64_t m) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    T* dst = buffer + row * m;
    const int32_t r = source[row];
    if (r < 0) {
      std::memset(static_cast<void*>(dst), 0, sizeof(T) * size_t(m));
      continue;
    }
    const T* src = x + (int64_t(r) % tokens) * m;
    if (weight == nullptr) {
      std::memcpy(static_cast<void*>(dst), src, sizeof(T) * size_t(m));
      continue;
    }
    const vf w = vset(weight[r]);
    for (int64_t i = 0; i < m; i += kWidth) {
      const int64_t c = std::min<int64_t>(kWidth, m - i);
      st(dst + i, vmul(ld(src + i, c), w), c);
    }
  }
}

template <typename T>
void combine(const T* y, const int32_t* expert, const int32_t* slot, const float* weight, T* out, int64_t k,
             int64_t tokens, int64_t capacity, int64_t m) {
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < tokens; ++s) {
    T* dst = out + s * m;
    for (int64_t i = 0; i < m; i += kWidth) {
      const int64_t c = std::min<int64_t>(kWidth, m - i);
      vf acc = vset(0.f);
      for (int64_t j = 0; j < k; ++j) {  // fixed route order: the torch reference adds in the same order
        const int64_t r = j * tokens + s;
        if (expert[r] < 0) continue;
        const vf v = ld(y + (int64_t(expert[r]) * capacity + slot[r]) * m + i, c);
        acc = vadd(acc, weight == nullptr ? v : vmul(v, vset(weight[r])));
      }
      st(dst + i, acc, c);
    }
  }
}

template <typename T>
void combine_backward(const T* grad_out, const T* y, const int32_t* source, const float* gate, T* grad_y,
                      float* grad_gate, int64_t rows, int64_t tokens, int64_t m) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    T* dst = grad_y + row * m;
    const int32_t r = source[row];
    if (r < 0) {
      std::memset(static_cast<void*>(dst), 0, sizeof(T) * size_t(m));
      continue;
    }
    const T* g = grad_out + (int64_t(r) % tokens) * m;
    const T* yr = y + row * m;
    const vf w = vset(gate[r]);
    vf dot = vset(0.f);
    for (int64_t i = 0; i < m; i += kWidth) {  // zero-padded tails add nothing to the dot product
      const int64_t c = std::min<int64_t>(kWidth, m - i);
      const vf gv = ld(g + i, c);
      st(dst + i, vmul(gv, w), c);
      dot = vfma(gv, ld(yr + i, c), dot);
    }
    grad_gate[r] = vsum(dot);
  }
}

template <typename F>
void with_dtype(int dtype, F&& f) {
  if (dtype == 0) f(static_cast<float*>(nullptr));
  else if (dtype == 1) f(static_cast<bf16*>(nullptr));
  else f(static_cast<fp16*>(nullptr));
}

}  // namespace

int64_t moe_first_bad_route(const int32_t* expert, const int32_t* slot, int64_t routes, int64_t num_experts,
                            int64_t capacity) {
  for (int64_t r = 0; r < routes; ++r) {
    if (expert[r] < -1 || expert[r] >= num_experts) return r;
    if (expert[r] >= 0 && (slot[r] < 0 || slot[r] >= capacity)) return r;
  }
  return -1;
}

int64_t moe_build_source(const int32_t* expert, const int32_t* slot, int64_t routes, int64_t capacity,
                         int64_t rows, int32_t* source) {
  std::fill(source, source + rows, int32_t(-1));
  for (int64_t r = 0; r < routes; ++r) {
    if (expert[r] < 0) continue;
    int32_t& owner = source[int64_t(expert[r]) * capacity + slot[r]];
    if (owner >= 0) return r;
    owner = int32_t(r);
  }
  return -1;
}

void moe_dispatch_rows(int dtype, const void* x, const int32_t* source, const float* weight, void* buffer,
                       int64_t rows, int64_t tokens, int64_t m) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    dispatch(static_cast<const T*>(x), source, weight, static_cast<T*>(buffer), rows, tokens, m);
  });
}

void moe_combine_rows(int dtype, const void* y, const int32_t* expert, const int32_t* slot, const float* weight,
                      void* out, int64_t k, int64_t tokens, int64_t capacity, int64_t m) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    combine(static_cast<const T*>(y), expert, slot, weight, static_cast<T*>(out), k, tokens, capacity, m);
  });
}

void moe_combine_backward(int dtype, const void* grad_out, const void* y, const int32_t* source, const float* gate,
                          void* grad_y, float* grad_gate, int64_t rows, int64_t tokens, int64_t m) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    combine_backward(static_cast<const T*>(grad_out), static_cast<const T*>(y), source, gate,
                     static_cast<T*>(grad_y), grad_gate, rows, tokens, m);
  });
}

}  // namespace accelops_cpu
