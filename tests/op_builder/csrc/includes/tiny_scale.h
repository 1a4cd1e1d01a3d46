// Test-only op for the build-engine tests: a scale factor and the CPU tier the engine compiled for.
#pragma once
#if defined(ACCELOPS_CPU_AVX512)
#define TINY_TIER "avx512"
#elif defined(ACCELOPS_CPU_AVX2)
#define TINY_TIER "avx2"
#elif defined(ACCELOPS_CPU_NEON)
#define TINY_TIER "neon"
#elif defined(ACCELOPS_CPU_SCALAR)
#define TINY_TIER "scalar"
#else
#error "the engine must define one ACCELOPS_CPU_<TIER> macro"
#endif
constexpr double kTinyFactor = 2.0;
