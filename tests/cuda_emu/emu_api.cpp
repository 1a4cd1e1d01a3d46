// C entry points (for ctypes) around the accelops CUDA launchers, built against the host emulation in
// include/: the tests call these with CPU pointers. Plans cross the boundary as 6 ints.
#include <cstdint>
#include <vector>

#include "cuda_fused_adam.h"
#include "cuda_fused_lion.h"
#include "cuda_layer_norm.h"
#include "cuda_moe_dispatch.h"
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

long long emu_ln_bwd_workspace_floats(const int* plan, int64_t rows, int n) {
    return accelops::layer_norm_bwd_workspace_floats(unpack(plan), rows, n);
}

int emu_ln_bwd(int dtype, const int* plan, const void* grad_y, const void* input, const float* mean,
               const float* rstd, const void* weight, void* grad_input, void* grad_weight, void* grad_bias,
               float* workspace, int64_t rows, int n) {
    return accelops::launch_layer_norm_bwd(dtype, unpack(plan), grad_y, input, mean, rstd, weight, grad_input,
                                           grad_weight, grad_bias, workspace, rows, n, nullptr);
}

int emu_adam_max_tensors() { return accelops::kMultiTensorMaxTensors; }

// One Adam step over `count` tensors of one dtype pair, through the binding's table filler
// (max_blocks < kMultiTensorMaxBlocks splits tables sooner). Returns 0, a cudaError_t or
// kMultiTensorTooLarge; *launches counts the kernel launches.
int emu_adam_step(int param_dtype, int state_dtype, int count, void* const* params, const void* const* grads,
                  void* const* exp_avgs, void* const* exp_avg_sqs, const float* const* steps,
                  const int64_t* numels, float lr, float beta1, float beta2, float eps, float weight_decay,
                  int adam_w_mode, int bias_correction, const float* grad_scale, const float* found_inf,
                  int max_blocks, int* launches) {
    std::vector<accelops::AdamEntry> tensors(count);
    for (int i = 0; i < count; ++i) {
        tensors[i] = {{params[i], const_cast<void*>(grads[i]), exp_avgs[i], exp_avg_sqs[i],
                       const_cast<float*>(steps[i])},
                      numels[i]};
    }
    const accelops::AdamHyper hyper{lr, beta1, beta2, eps, weight_decay, adam_w_mode, bias_correction,
                                    grad_scale, found_inf};
    *launches = 0;
    auto launch = [&](const accelops::AdamTable& tab) {
        ++*launches;
        return accelops::launch_fused_adam(param_dtype, state_dtype, tab, hyper, nullptr);
    };
    return accelops::fill_multi_tensor_tables(tensors.data(), tensors.size(), launch, max_blocks);
}

int emu_lion_max_tensors() { return accelops::kMultiTensorMaxTensors; }

// One Lion step over `count` tensors of one dtype pair, through the binding's table filler and its
// hyperparameter rounding (max_blocks < kMultiTensorMaxBlocks splits tables sooner). Returns 0, a
// cudaError_t or kMultiTensorTooLarge; *launches counts the kernel launches.
int emu_lion_step(int param_dtype, int state_dtype, int count, void* const* params, const void* const* grads,
                  void* const* exp_avgs, const int64_t* numels, double lr, double beta1, double beta2,
                  double weight_decay, int max_blocks, int* launches) {
    std::vector<accelops::LionEntry> tensors(count);
    for (int i = 0; i < count; ++i) tensors[i] = {{params[i], const_cast<void*>(grads[i]), exp_avgs[i]}, numels[i]};
    const accelops::LionHyper hyper = accelops::lion_hyper(lr, beta1, beta2, weight_decay);
    *launches = 0;
    auto launch = [&](const accelops::LionTable& tab) {
        ++*launches;
        return accelops::launch_fused_lion(param_dtype, state_dtype, tab, hyper, nullptr);
    };
    return accelops::fill_multi_tensor_tables(tensors.data(), tensors.size(), launch, max_blocks);
}

// The MoE dispatch launchers, with the route -> buffer-row table made by its own launcher (as the binding does).
int emu_moe_build_source(const int32_t* expert, const int32_t* slot, int64_t routes, int64_t capacity, int64_t rows,
                         int32_t* source) {
    return accelops::launch_moe_build_source(expert, slot, routes, capacity, rows, source, nullptr);
}

int emu_moe_dispatch(int dtype, const void* x, const int32_t* source, const float* weight, void* buffer, int64_t rows,
                     int64_t tokens, int64_t m) {
    return accelops::launch_moe_dispatch(dtype, x, source, weight, buffer, rows, tokens, m, nullptr);
}

int emu_moe_combine(int dtype, const void* y, const int32_t* expert, const int32_t* slot, const float* weight,
                    void* out, int64_t k, int64_t tokens, int64_t num_experts, int64_t capacity, int64_t m) {
    return accelops::launch_moe_combine(dtype, y, expert, slot, weight, out, k, tokens, num_experts, capacity, m,
                                        nullptr);
}

int emu_moe_combine_bwd(int dtype, const void* grad_out, const void* y, const int32_t* source, const float* gate,
                        void* grad_y, float* grad_gate, int64_t rows, int64_t tokens, int64_t m) {
    return accelops::launch_moe_combine_bwd(dtype, grad_out, y, source, gate, grad_y, grad_gate, rows, tokens, m,
                                            nullptr);
}

}  // extern "C"
