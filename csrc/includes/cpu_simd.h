// Minimal float-vector layer for the CPU kernels, one implementation per instruction-set tier.
// Exactly one tier macro is defined by the build engine: ACCELOPS_CPU_AVX512, ACCELOPS_CPU_AVX2,
// ACCELOPS_CPU_NEON or ACCELOPS_CPU_SCALAR. Values are fp32 in registers; memory may hold fp32,
// bf16 (round-to-nearest-even on store, NaN kept quiet) or fp16 (IEEE half, hardware conversion).
// No fast-math: results must round like torch's fp32 ops.
#pragma once
#if defined(_MSC_VER) && !defined(__clang__)
// No implicit FMA contraction (gcc/clang get -ffp-contract=off; MSVC before VS 2022 17.0 contracts by default).
#pragma fp_contract(off)
#endif
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(ACCELOPS_CPU_AVX512) || defined(ACCELOPS_CPU_AVX2)
#include <immintrin.h>
#elif defined(ACCELOPS_CPU_NEON)
#include <arm_neon.h>
#elif !defined(ACCELOPS_CPU_SCALAR)
#error "define one CPU tier: ACCELOPS_CPU_AVX512, ACCELOPS_CPU_AVX2, ACCELOPS_CPU_NEON or ACCELOPS_CPU_SCALAR"
#endif

namespace accelops_cpu {

// 16-bit storage types: raw bits; the kernels never do arithmetic on them directly.
struct bf16 { uint16_t bits; };
struct fp16 { uint16_t bits; };

// ---- scalar conversions (used by the scalar tier and by the reference helpers) ----
inline float bf16_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return uint16_t((u >> 16) | 0x40);  // quiet NaN, sign kept
  u += 0x7fffu + ((u >> 16) & 1u);                         // round to nearest, ties to even
  return uint16_t(u >> 16);
}
inline float fp16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal half: normalise
    int e = -1;
    do { ++e; man <<= 1; } while (!(man & 0x400));
    u = sign | uint32_t(112 - e) << 23 | ((man & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t float_to_fp16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return uint16_t(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));  // inf / NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00);       // rounds to >= 65520: overflow to inf
  if (a < 0x38800000u) {                                       // result is subnormal or zero
    float v;
    std::memcpy(&v, &a, 4);
    // adding 0.5 (2^-1) aligns the half-subnormal ulp (2^-24) to the float ulp: hardware RNE does it
    float t = v + 0.5f;
    uint32_t tu;
    std::memcpy(&tu, &t, 4);
    return uint16_t(sign | (tu - 0x3f000000u));
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;   // rebias 127 -> 15 with RNE on 13 bits
  return uint16_t(sign | (r >> 13));
}

inline float to_float(float v) { return v; }
inline float to_float(bf16 v) { return bf16_to_float(v.bits); }
inline float to_float(fp16 v) { return fp16_to_float(v.bits); }
inline void from_float(float* d, float v) { *d = v; }
inline void from_float(bf16* d, float v) { d->bits = float_to_bf16(v); }
inline void from_float(fp16* d, float v) { d->bits = float_to_fp16(v); }

// ---- vector tier ----
#if defined(ACCELOPS_CPU_AVX512)
constexpr int kWidth = 16;
using vf = __m512;
inline vf vset(float x) { return _mm512_set1_ps(x); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }  // a*b+c
inline vf vsqrt(vf a) { return _mm512_sqrt_ps(a); }
inline float vsum(vf a) { return _mm512_reduce_add_ps(a); }
inline vf vsign(vf a) {  // as torch.sign on CPU: -1, 0, +1, and 0 for NaN
  __mmask16 pos = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ);
  __mmask16 neg = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_LT_OQ);
  vf r = _mm512_mask_blend_ps(pos, _mm512_setzero_ps(), _mm512_set1_ps(1.f));
  return _mm512_mask_blend_ps(neg, r, _mm512_set1_ps(-1.f));
}
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline vf vload(const bf16* p) {
  __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline void vstore(bf16* p, vf v) {
  __m512i u = _mm512_castps_si512(v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));  // quiet NaN
  r = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), r, q);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
}
inline vf vload(const fp16* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline void vstore(fp16* p, vf v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

#elif defined(ACCELOPS_CPU_AVX2)
constexpr int kWidth = 8;
using vf = __m256;
inline vf vset(float x) { return _mm256_set1_ps(x); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vsqrt(vf a) { return _mm256_sqrt_ps(a); }
inline float vsum(vf a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline vf vsign(vf a) {
  vf z = _mm256_setzero_ps();
  vf pos = _mm256_and_ps(_mm256_cmp_ps(a, z, _CMP_GT_OQ), _mm256_set1_ps(1.f));
  vf neg = _mm256_and_ps(_mm256_cmp_ps(a, z, _CMP_LT_OQ), _mm256_set1_ps(-1.f));
  return _mm256_or_ps(pos, neg);  // NaN compares false both ways: 0, as torch.sign on CPU
}
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline vf vload(const bf16* p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline void vstore(bf16* p, vf v) {
  __m256i u = _mm256_castps_si256(v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));  // quiet NaN
  r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(q),
                                           _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  // every lane is <= 0xffff, so unsigned saturation packs exactly
  __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
inline vf vload(const fp16* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline void vstore(fp16* p, vf v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

#elif defined(ACCELOPS_CPU_NEON)
constexpr int kWidth = 4;
using vf = float32x4_t;
inline vf vset(float x) { return vdupq_n_f32(x); }
inline vf vadd(vf a, vf b) { return vaddq_f32(a, b); }
inline vf vsub(vf a, vf b) { return vsubq_f32(a, b); }
inline vf vmul(vf a, vf b) { return vmulq_f32(a, b); }
inline vf vdiv(vf a, vf b) { return vdivq_f32(a, b); }
inline vf vfma(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
inline vf vsqrt(vf a) { return vsqrtq_f32(a); }
inline float vsum(vf a) { return vaddvq_f32(a); }
inline vf vsign(vf a) {
  vf z = vdupq_n_f32(0.f);
  uint32x4_t pos = vandq_u32(vcgtq_f32(a, z), vreinterpretq_u32_f32(vdupq_n_f32(1.f)));
  uint32x4_t neg = vandq_u32(vcltq_f32(a, z), vreinterpretq_u32_f32(vdupq_n_f32(-1.f)));
  return vreinterpretq_f32_u32(vorrq_u32(pos, neg));  // NaN compares false both ways: 0, as torch.sign
}
inline vf vload(const float* p) { return vld1q_f32(p); }
inline void vstore(float* p, vf v) { vst1q_f32(p, v); }
inline vf vload(const bf16* p) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)), 16));
}
inline void vstore(bf16* p, vf v) {
  uint32x4_t u = vreinterpretq_u32_f32(v);
  uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
  uint32x4_t r = vshrq_n_u32(vaddq_u32(u, vaddq_u32(lsb, vdupq_n_u32(0x7fff))), 16);
  uint32x4_t q = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
  r = vbslq_u32(vceqq_f32(v, v), r, q);
  vst1_u16(reinterpret_cast<uint16_t*>(p), vmovn_u32(r));
}
inline vf vload(const fp16* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
}
inline void vstore(fp16* p, vf v) {
  vst1_u16(reinterpret_cast<uint16_t*>(p), vreinterpret_u16_f16(vcvt_f16_f32(v)));
}

#else  // ACCELOPS_CPU_SCALAR
constexpr int kWidth = 1;
using vf = float;
inline vf vset(float x) { return x; }
inline vf vadd(vf a, vf b) { return a + b; }
inline vf vsub(vf a, vf b) { return a - b; }
inline vf vmul(vf a, vf b) { return a * b; }
inline vf vdiv(vf a, vf b) { return a / b; }
inline vf vfma(vf a, vf b, vf c) { return std::fma(a, b, c); }
inline vf vsqrt(vf a) { return std::sqrt(a); }
inline float vsum(vf a) { return a; }
inline vf vsign(vf a) { return float((a > 0.f) - (a < 0.f)); }  // NaN -> 0, as torch.sign on CPU
template <typename T> inline vf vload(const T* p) { return to_float(*p); }
template <typename T> inline void vstore(T* p, vf v) { from_float(p, v); }
#endif

// Tails: a partial vector goes through a zero-padded stack buffer, so every element sees the same
// arithmetic as the full vectors (no padding of the tensors themselves).
template <typename T>
inline vf load_tail(const T* p, int64_t count) {
  T buf[kWidth];
  std::memset(static_cast<void*>(buf), 0, sizeof(buf));
  std::memcpy(static_cast<void*>(buf), p, sizeof(T) * size_t(count));
  return vload(buf);
}
template <typename T>
inline void store_tail(T* p, vf v, int64_t count) {
  T buf[kWidth];
  vstore(buf, v);
  std::memcpy(static_cast<void*>(p), buf, sizeof(T) * size_t(count));
}

// Load/store `count` (1..kWidth) elements; with count == kWidth (a constant after inlining) this is a
// plain vector access.
template <typename T>
inline vf ld(const T* p, int64_t count) { return count == kWidth ? vload(p) : load_tail(p, count); }
template <typename T>
inline void st(T* p, vf v, int64_t count) {
  if (count == kWidth) vstore(p, v); else store_tail(p, v, count);
}

// Non-temporal store of one full fp32 vector to an address aligned to its size: the cache line is written
// without being read first and without evicting cached data. Only for outputs far larger than the
// caches; call stream_fence() before the data is read by another thread. Returns v (as stored), so a
// caller never has to read its output back. (Measured: streaming 16-bit outputs was slower.)
inline vf vstream(float* p, vf v) {
#if defined(ACCELOPS_CPU_AVX512)
  _mm512_stream_ps(p, v);
#elif defined(ACCELOPS_CPU_AVX2)
  _mm256_stream_ps(p, v);
#else
  vstore(p, v);
#endif
  return v;
}
template <typename T>
inline bool stream_aligned(const T* p) { return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kWidth) == 0; }
inline void stream_fence() {
#if defined(ACCELOPS_CPU_AVX512) || defined(ACCELOPS_CPU_AVX2)
  _mm_sfence();
#endif
}

}  // namespace accelops_cpu
