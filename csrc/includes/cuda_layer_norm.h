// Host interface of the fused residual-add + layer norm kernels: launch planning and launchers.
// No ATen here, so the kernel file builds fast.
#pragma once

#include <cuda_runtime_api.h>
#include <cstdint>

namespace accelops {

// Longest row the kernels take: plan and loop arithmetic is 32-bit with headroom (callers check).
constexpr int kMaxRowSize = 1 << 30;

// How rows are spread over the GPU: blocks of (bx, by) threads, by rows at a time.
struct LnPlan {
    int vec;         // elements per vector access (1 when unaligned or row size not a multiple)
    bool cached;     // row held in registers (else streamed from memory in several passes)
    int bx, by;      // block shape: bx threads per row, by rows per block
    int grid;        // blocks of the row kernels
    int parts;       // rows of the fp32 grad_weight/grad_bias partials (backward)
};

// elem_size: bytes per element; aligned: every pointer is 16-byte aligned.
LnPlan plan_layer_norm(int elem_size, bool aligned, int64_t rows, int n, int sm_count, bool backward);

// y = layer_norm(x + residual) (residual may be null: then s is unused). mean/rstd: fp32 [rows].
cudaError_t launch_add_layer_norm_fwd(int dtype, const LnPlan& plan, const void* x, const void* residual,
                                      void* s, void* y, const void* weight, const void* bias, float* mean,
                                      float* rstd, int64_t rows, int n, float eps, cudaStream_t stream);

// fp32 elements of the workspace launch_layer_norm_bwd needs: grad_weight/grad_bias partials, plus
// two sums per row when the plan streams rows.
int64_t layer_norm_bwd_workspace_floats(const LnPlan& plan, int64_t rows, int n);

// grad_input plus grad_weight/grad_bias (weight dtype), using layer_norm_bwd_workspace_floats floats of
// workspace.
cudaError_t launch_layer_norm_bwd(int dtype, const LnPlan& plan, const void* grad_y, const void* input,
                                  const float* mean, const float* rstd, const void* weight,
                                  void* grad_input, void* grad_weight, void* grad_bias, float* workspace,
                                  int64_t rows, int n, cudaStream_t stream);

}  // namespace accelops
