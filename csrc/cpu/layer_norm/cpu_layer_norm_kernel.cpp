// Kernels of the CPU fused residual-add + layer norm (see cpu_layer_norm.h). Rows are spread over
// OpenMP threads; each row is staged once as float32 in a per-thread buffer (L1/L2 resident), then
// normalised with the SIMD tier's vectors; partial vectors go through the tail helpers.
#include "cpu_layer_norm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu_simd.h"

namespace accelops_cpu {
namespace {

// fp32 outputs at least this large are written with non-temporal stores (see vstream).
constexpr int64_t kStreamBytes = int64_t(16) << 20;

template <typename T>
void forward(const T* x, const T* res, const T* w, const T* b, T* y, T* s, float* mean, float* rstd, int64_t rows,
             int64_t n, float eps) {
  // Large fp32 outputs whose rows are whole aligned vectors skip the read-for-ownership of every line.
  constexpr bool is_fp32 = std::is_same<T, float>::value;
  const bool stream = is_fp32 && rows * n * int64_t(sizeof(T)) >= kStreamBytes && n % kWidth == 0 &&
                      stream_aligned(y) && (!res || stream_aligned(s));
#pragma omp parallel
  {
    std::vector<float> buf(size_t(n + kWidth));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r * n;
      vf acc = vset(0.f);
      int64_t i = 0;
      for (; i < n; i += kWidth) {  // stage the row (rounded like x + residual in T) and sum it
        const int64_t c = std::min<int64_t>(kWidth, n - i);
        vf v = ld(x + o + i, c);
        if (res) {  // the statistics use the sum rounded to T, as F.layer_norm(x + r) does
          if (stream) {
            v = vstream(reinterpret_cast<float*>(s) + o + i, vadd(v, ld(res + o + i, c)));
          } else {
            st(s + o + i, vadd(v, ld(res + o + i, c)), c);
            v = ld(s + o + i, c);
          }
        }
        vstore(buf.data() + i, v);  // zero-padded tail lanes add nothing to the sum
        acc = vadd(acc, v);
      }
      // Shifted two-pass statistics: the first mean estimate can be off by its rounding error (large for
      // rows with a big offset); the sums of d = x - estimate correct it and give the variance.
      const float estimate = vsum(acc) / float(n);
      const vf vest = vset(estimate);
      vf sd = vset(0.f), sq = vset(0.f);
      for (i = 0; i + kWidth <= n; i += kWidth) {
        vf d = vsub(vload(buf.data() + i), vest);
        sd = vadd(sd, d);
        sq = vfma(d, d, sq);
      }
      float sum_d = vsum(sd), sum_d2 = vsum(sq);
      for (; i < n; ++i) {
        const float d = buf[i] - estimate;
        sum_d += d;
        sum_d2 += d * d;
      }
      const float shift = sum_d / float(n);
      const float mu = estimate + shift;
      const float var = std::max(sum_d2 / float(n) - shift * shift, 0.f);
      const vf vmu = vset(mu);
      const float rs = 1.f / std::sqrt(var + eps);
      const vf vrs = vset(rs);
      for (i = 0; i < n; i += kWidth) {
        const int64_t c = std::min<int64_t>(kWidth, n - i);
        vf xhat = vmul(vsub(vload(buf.data() + i), vmu), vrs);
        vf out = vfma(xhat, ld(w + i, c), ld(b + i, c));
        if (stream) vstream(reinterpret_cast<float*>(y) + o + i, out); else st(y + o + i, out, c);
      }
      mean[r] = mu;
      rstd[r] = rs;
    }
    if (stream) stream_fence();
  }
}

template <typename T>
void backward(const T* dy, const T* in, const float* mean, const float* rstd, const T* w, T* dx, T* dw, T* db,
              int64_t rows, int64_t n) {
  const int threads = omp_get_max_threads();
  std::vector<float> acc(size_t(threads) * size_t(2 * (n + kWidth)), 0.f);  // per thread: dw, db
#pragma omp parallel num_threads(threads)
  {
    float* tdw = acc.data() + size_t(omp_get_thread_num()) * size_t(2 * (n + kWidth));
    float* tdb = tdw + n + kWidth;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r * n;
      const vf vmu = vset(mean[r]), vrs = vset(rstd[r]);
      vf sg = vset(0.f), sgx = vset(0.f);
      for (int64_t i = 0; i < n; i += kWidth) {  // zero-padded tails contribute 0 (grad_y is 0 there)
        const int64_t c = std::min<int64_t>(kWidth, n - i);
        vf d = ld(dy + o + i, c);
        vf xhat = vmul(vsub(ld(in + o + i, c), vmu), vrs);
        vf g = vmul(d, ld(w + i, c));
        sg = vadd(sg, g);
        sgx = vfma(g, xhat, sgx);
        vstore(tdw + i, vfma(d, xhat, vload(tdw + i)));
        vstore(tdb + i, vadd(d, vload(tdb + i)));
      }
      const vf mg = vset(vsum(sg) / float(n)), mgx = vset(vsum(sgx) / float(n));
      for (int64_t i = 0; i < n; i += kWidth) {
        const int64_t c = std::min<int64_t>(kWidth, n - i);
        vf xhat = vmul(vsub(ld(in + o + i, c), vmu), vrs);
        vf g = vmul(ld(dy + o + i, c), ld(w + i, c));
        st(dx + o + i, vmul(vrs, vsub(vsub(g, mg), vmul(xhat, mgx))), c);
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {  // reduce the per-thread partial sums (fixed order: deterministic)
    float sw = 0.f, sb = 0.f;
    for (int t = 0; t < threads; ++t) {
      sw += acc[size_t(t) * size_t(2 * (n + kWidth)) + size_t(i)];
      sb += acc[size_t(t) * size_t(2 * (n + kWidth)) + size_t(n + kWidth + i)];
    }
    from_float(dw + i, sw);
    from_float(db + i, sb);
  }
}

template <typename F>
void with_dtype(int dtype, F&& f) {
  if (dtype == 0) f(static_cast<float*>(nullptr));
  else if (dtype == 1) f(static_cast<bf16*>(nullptr));
  else f(static_cast<fp16*>(nullptr));
}

}  // namespace

void add_layer_norm_forward(int dtype, const void* x, const void* residual, const void* weight, const void* bias,
                            void* y, void* s, float* mean, float* rstd, int64_t rows, int64_t n, float eps) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    forward(static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<const T*>(weight),
            static_cast<const T*>(bias), static_cast<T*>(y), static_cast<T*>(s), mean, rstd, rows, n, eps);
  });
}

void add_layer_norm_backward(int dtype, const void* grad_y, const void* input, const float* mean,
                             const float* rstd, const void* weight, void* grad_input, void* grad_weight,
                             void* grad_bias, int64_t rows, int64_t n) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    backward(static_cast<const T*>(grad_y), static_cast<const T*>(input), mean, rstd, static_cast<const T*>(weight),
             static_cast<T*>(grad_input), static_cast<T*>(grad_weight), static_cast<T*>(grad_bias), rows, n);
  });
}

}  // namespace accelops_cpu
