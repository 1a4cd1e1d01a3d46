// CPU fused residual-add + layer norm, forward and backward, over contiguous [rows, n] buffers.
// dtype codes: 0 = float32, 1 = bfloat16, 2 = float16 (all tensors of one call share the dtype,
// except mean/rstd which are always float32). Statistics and gradients accumulate in float32.
// Light header (no torch): the kernels compile in their own translation unit.
#pragma once
#include <cstdint>

namespace accelops_cpu {

// s = x + residual (rounded to the dtype; skipped when residual == nullptr, s may then be nullptr),
// y = (s - mean) * rstd * weight + bias with mean/rstd of each row of s (or x), rstd = 1/sqrt(var + eps).
void add_layer_norm_forward(int dtype, const void* x, const void* residual, const void* weight, const void* bias,
                            void* y, void* s, float* mean, float* rstd, int64_t rows, int64_t n, float eps);

// grad_input = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = grad_y * weight,
// xhat = (input - mean) * rstd; grad_weight = sum_rows(grad_y * xhat), grad_bias = sum_rows(grad_y).
void add_layer_norm_backward(int dtype, const void* grad_y, const void* input, const float* mean,
                             const float* rstd, const void* weight, void* grad_input, void* grad_weight,
                             void* grad_bias, int64_t rows, int64_t n);

}  // namespace accelops_cpu
