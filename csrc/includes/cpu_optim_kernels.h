// Element-wise update rules of the CPU optimizers (Adam/AdamW, Adagrad, Lion) on fp32 registers.
// Each rule updates `n` elements in place: params `p` (fp32/bf16/fp16 memory), grads `g` (fp32/bf16/
// fp16), fp32 state, and optionally writes a bf16/fp16 copy of the updated params in the same pass
// (`C` = NoCopy when there is none). Full vectors in the main loop, the last partial vector through
// the tail helpers of cpu_simd.h. The math follows torch.optim's single-tensor order of operations
// (no fast-math), so fp32 results match torch to a few ulps.
#pragma once
#include "cpu_simd.h"

namespace accelops_cpu {

struct NoCopy {};  // "no low-precision copy of the params to write"
inline void st(NoCopy*, vf, int64_t) {}
template <typename C>
inline C* advance(C* c, int64_t i) { return c + i; }
inline NoCopy* advance(NoCopy* c, int64_t) { return c; }

// Calls body(offset, count) over [0, n) with count == kWidth except for the last partial vector.
template <typename F>
inline void for_chunks(int64_t n, F&& body) {
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) body(i, int64_t(kWidth));
  if (i < n) body(i, n - i);
}

struct AdamArgs {
  float beta1, beta2, eps, weight_decay;
  float decay;      // 1 - lr * weight_decay (AdamW) or 1
  float step_size;  // lr / (1 - beta1^t), or lr without bias correction
  float bc2_sqrt;   // sqrt(1 - beta2^t), or 1
  bool l2, maximize;
};

// Adam (l2: grad += wd * p) or AdamW (decay = 1 - lr * wd); exp_avg by lerp, as torch does.
template <typename P, typename G, typename C>
inline void adam_update(P* p, const G* g, float* m, float* v, C* copy, int64_t n, const AdamArgs& a) {
  const vf one_m_b1 = vset(1.f - a.beta1), b2 = vset(a.beta2), one_m_b2 = vset(1.f - a.beta2);
  const vf wd = vset(a.weight_decay), decay = vset(a.decay), bc2 = vset(a.bc2_sqrt), eps = vset(a.eps);
  const vf neg_step = vset(-a.step_size), sign = vset(a.maximize ? -1.f : 1.f);
  for_chunks(n, [&](int64_t i, int64_t c) {
    vf gv = vmul(ld(g + i, c), sign);
    vf pv = ld(p + i, c);
    if (a.l2) gv = vfma(pv, wd, gv);
    pv = vmul(pv, decay);
    vf mv = vfma(vsub(gv, ld(m + i, c)), one_m_b1, ld(m + i, c));
    vf vv = vfma(vmul(gv, gv), one_m_b2, vmul(ld(v + i, c), b2));
    vf denom = vadd(vdiv(vsqrt(vv), bc2), eps);
    pv = vfma(vdiv(mv, denom), neg_step, pv);
    st(m + i, mv, c);
    st(v + i, vv, c);
    st(p + i, pv, c);
    st(advance(copy, i), pv, c);
  });
}

struct AdagradArgs {
  float clr;  // lr / (1 + (t - 1) * lr_decay)
  float eps, weight_decay;
  bool maximize;
};

// Adagrad: grad += wd * p; sum += grad^2; p -= clr * grad / (sqrt(sum) + eps).
template <typename P, typename G, typename C>
inline void adagrad_update(P* p, const G* g, float* sum, float*, C* copy, int64_t n, const AdagradArgs& a) {
  const vf wd = vset(a.weight_decay), eps = vset(a.eps), neg_clr = vset(-a.clr);
  const vf sign = vset(a.maximize ? -1.f : 1.f);
  for_chunks(n, [&](int64_t i, int64_t c) {
    vf gv = vmul(ld(g + i, c), sign);
    vf pv = ld(p + i, c);
    if (a.weight_decay != 0.f) gv = vfma(pv, wd, gv);
    vf sv = vfma(gv, gv, ld(sum + i, c));
    pv = vfma(vdiv(gv, vadd(vsqrt(sv), eps)), neg_clr, pv);
    st(sum + i, sv, c);
    st(p + i, pv, c);
    st(advance(copy, i), pv, c);
  });
}

struct LionArgs {
  float lr, beta1, beta2;
  float decay;  // 1 - lr * weight_decay
  bool maximize;
};

// Lion: p *= decay; p -= lr * sign(beta1 * m + (1 - beta1) * g); m = beta2 * m + (1 - beta2) * g.
template <typename P, typename G, typename C>
inline void lion_update(P* p, const G* g, float* m, float*, C* copy, int64_t n, const LionArgs& a) {
  const vf b1 = vset(a.beta1), one_m_b1 = vset(1.f - a.beta1), b2 = vset(a.beta2), one_m_b2 = vset(1.f - a.beta2);
  const vf decay = vset(a.decay), neg_lr = vset(-a.lr), sign = vset(a.maximize ? -1.f : 1.f);
  for_chunks(n, [&](int64_t i, int64_t c) {
    vf gv = vmul(ld(g + i, c), sign);
    vf mv = ld(m + i, c);
    vf pv = vmul(ld(p + i, c), decay);
    pv = vfma(vsign(vfma(gv, one_m_b1, vmul(mv, b1))), neg_lr, pv);
    st(m + i, vfma(gv, one_m_b2, vmul(mv, b2)), c);
    st(p + i, pv, c);
    st(advance(copy, i), pv, c);
  });
}

}  // namespace accelops_cpu
