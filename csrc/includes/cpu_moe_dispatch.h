// CPU mixture-of-experts dispatch and combine from routing indices (no dense masks).
// Routes: k routes per token, stored [k, S] (route r = k_index * S + s): expert[r] (-1 = dropped) and
// slot[r] in [0, C); a kept route owns the buffer row expert * C + slot (no two routes share a row).
// dtype codes: 0 = float32, 1 = bfloat16, 2 = float16 (tokens, buffers and outputs of one call share
// the dtype; weights are float32). Arithmetic is float32. Light header (no torch).
#pragma once
#include <cstdint>

namespace accelops_cpu {

// Index of the first route that is out of range (expert outside [-1, E) or, for a kept route, slot outside
// [0, C)), or -1 when every route is in range.
int64_t moe_first_bad_route(const int32_t* expert, const int32_t* slot, int64_t routes, int64_t num_experts,
                            int64_t capacity);

// source[row] = the route that owns buffer row `row` (rows = E * C), or -1. Routes must be in range
// (moe_first_bad_route). Returns -1, or the first route whose row another route already owns.
int64_t moe_build_source(const int32_t* expert, const int32_t* slot, int64_t routes, int64_t capacity,
                         int64_t rows, int32_t* source);

// buffer[row] = x[source[row] % S] (times weight[source[row]] when weight is not null), zeros where
// source is -1. x: [S, m], buffer: [rows, m].
void moe_dispatch_rows(int dtype, const void* x, const int32_t* source, const float* weight, void* buffer,
                       int64_t rows, int64_t tokens, int64_t m);

// out[s] = sum over k, in order, of weight[k, s] * y[expert * C + slot] (weight null: 1), skipping
// dropped routes. y: [E * C, m], out: [S, m].
void moe_combine_rows(int dtype, const void* y, const int32_t* expert, const int32_t* slot, const float* weight,
                      void* out, int64_t k, int64_t tokens, int64_t capacity, int64_t m);

// Backward of the combine: grad_y[row] = gate[r] * grad_out[s] for the route r = source[row] of token s
// (zeros for free rows) and grad_gate[r] = dot(grad_out[s], y[row]) (grad_gate of dropped routes is left
// as the caller set it).
void moe_combine_backward(int dtype, const void* grad_out, const void* y, const int32_t* source, const float* gate,
                          void* grad_y, float* grad_gate, int64_t rows, int64_t tokens, int64_t m);

}  // namespace accelops_cpu
