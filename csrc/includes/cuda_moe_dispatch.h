// Host interface of the MoE dispatch/combine CUDA kernels (see csrc/includes/cpu_moe_dispatch.h for the
// meaning of routes, sources and weights). No ATen here, so the kernel file builds fast.
#pragma once

#include <cuda_runtime_api.h>
#include <cstdint>

namespace accelops {

// source[row] = the route owning buffer row `row` (rows = E * C), or -1. Routes out of range are skipped
// (the Python glue rejects them first); two routes of one row leave either (also rejected in Python).
cudaError_t launch_moe_build_source(const int32_t* expert, const int32_t* slot, int64_t routes, int64_t capacity,
                                    int64_t rows, int32_t* source, cudaStream_t stream);

// buffer[row] = x[source[row] % S] (times weight[source[row]], weight may be null), zeros for free rows.
cudaError_t launch_moe_dispatch(int dtype, const void* x, const int32_t* source, const float* weight, void* buffer,
                                int64_t rows, int64_t tokens, int64_t m, cudaStream_t stream);

// out[s] = sum over k in order of weight[k, s] * y[expert * C + slot] (weight may be null), fp32 sums.
cudaError_t launch_moe_combine(int dtype, const void* y, const int32_t* expert, const int32_t* slot,
                               const float* weight, void* out, int64_t k, int64_t tokens, int64_t num_experts,
                               int64_t capacity, int64_t m, cudaStream_t stream);

// grad_y[row] = gate[r] * grad_out[s] (zeros for free rows) and grad_gate[r] = dot(grad_out[s], y[row]) for
// r = source[row]; grad_gate of routes without a row is left as it is (the caller zeroes it).
cudaError_t launch_moe_combine_bwd(int dtype, const void* grad_out, const void* y, const int32_t* source,
                                   const float* gate, void* grad_y, float* grad_gate, int64_t rows, int64_t tokens,
                                   int64_t m, cudaStream_t stream);

}  // namespace accelops
