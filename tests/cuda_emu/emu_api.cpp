// C entry points (for ctypes) around the accelops CUDA launchers, built against the host emulation in
// include/: the tests call these with CPU pointers. Plans cross the boundary as 6 ints.
#include <cstdint>

#include "cuda_layer_norm.h"
#include "cuda_runtime.h"

namespace {

accelops::LnPlan unpack(const int* f) {
    accelops::LnPlan p{};
    p.vec = f[0];
    p.cached = f[1] != 0;
    p.bx = f[2];
    p.by = f[3];
    p.grid = f[4];
    p.parts = f[5];
    return p;
}

}  // namespace

extern "C" {

void emu_set_reverse_order(int reverse) { cuda_emu::set_reverse_order(reverse != 0); }

long long emu_switches() { return cuda_emu::rt().switches; }

void emu_ln_plan(int elem_size, int aligned, int64_t rows, int n, int sm_count, int backward, int* out) {
    const accelops::LnPlan p = accelops::plan_layer_norm(elem_size, aligned != 0, rows, n, sm_count, backward != 0);
    const int fields[6] = {p.vec, p.cached ? 1 : 0, p.bx, p.by, p.grid, p.parts};
    for (int i = 0; i < 6; ++i) out[i] = fields[i];
}

int emu_ln_fwd(int dtype, const int* plan, const void* x, const void* residual, void* s, void* y,
               const void* weight, const void* bias, float* mean, float* rstd, int64_t rows, int n, float eps) {
    return accelops::launch_add_layer_norm_fwd(dtype, unpack(plan), x, residual, s, y, weight, bias, mean, rstd,
                                               rows, n, eps, nullptr);
}

int emu_ln_bwd(int dtype, const int* plan, const void* grad_y, const void* input, const float* mean,
               const float* rstd, const void* weight, void* grad_input, void* grad_weight, void* grad_bias,
               float* workspace, int64_t rows, int n) {
    return accelops::launch_layer_norm_bwd(dtype, unpack(plan), grad_y, input, mean, rstd, weight, grad_input,
                                           grad_weight, grad_bias, workspace, rows, n, nullptr);
}

}  // extern "C"
