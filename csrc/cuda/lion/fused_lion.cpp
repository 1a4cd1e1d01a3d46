// Binding of the multi-tensor fused Lion kernel (torch stable ABI): validates the tensor lists, groups them
// by (param dtype, state dtype), fills launch tables and launches on the current stream.
#include <map>
#include <utility>
#include <vector>

#include "cuda_fused_lion.h"
#include "cuda_stable_binding.h"

namespace {

using accelops::check_step_tensor;
using accelops::dtype_code;
using torch::headeronly::ScalarType;
using torch::stable::Device;
using torch::stable::Tensor;

// Last-line checks only: accelops.ops.fused_lion validates every input in Python (with messages that
// name the tensor) before calling here. The messages are constant strings, as in fused_adam.cpp.
void validate(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              const std::vector<Tensor>& exp_avgs) {
    const size_t n = params.size();
    STD_TORCH_CHECK(grads.size() == n && exp_avgs.size() == n,
                    "fused_lion: params, grads and exp_avgs must have the same length");
    if (n == 0) return;
    const Device device = params[0].device();
    STD_TORCH_CHECK(params[0].is_cuda(), "fused_lion: tensors must be on a CUDA device");
    for (size_t i = 0; i < n; ++i) {
        const Tensor& p = params[i];
        check_step_tensor("fused_lion", p, device);
        check_step_tensor("fused_lion", grads[i], device);
        check_step_tensor("fused_lion", exp_avgs[i], device);
        STD_TORCH_CHECK(dtype_code(p.scalar_type()) >= 0, "fused_lion: params must be float32, float16 or bfloat16");
        STD_TORCH_CHECK(grads[i].scalar_type() == p.scalar_type(),
                        "fused_lion: a grad's dtype differs from its param's");
        const ScalarType st = exp_avgs[i].scalar_type();
        STD_TORCH_CHECK(st == ScalarType::Float || st == p.scalar_type(),
                        "fused_lion: exp_avg must be float32 or the param dtype");
        STD_TORCH_CHECK(grads[i].numel() == p.numel() && exp_avgs[i].numel() == p.numel(),
                        "fused_lion: grads and exp_avgs must have as many elements as their params");
    }
}

// Launches the tensors at `idx` (one dtype pair) in as many tables as they need.
void run_bucket(int param_code, int state_code, const std::vector<size_t>& idx, const std::vector<Tensor>& params,
                const std::vector<Tensor>& grads, const std::vector<Tensor>& exp_avgs,
                const accelops::LionHyper& hyper, cudaStream_t stream) {
    std::vector<accelops::LionTensor> tensors;
    tensors.reserve(idx.size());
    for (size_t i : idx) {
        tensors.push_back({params[i].mutable_data_ptr(), grads[i].const_data_ptr(), exp_avgs[i].mutable_data_ptr(),
                           params[i].numel()});
    }
    const int err = accelops::fill_lion_tables(tensors.data(), tensors.size(), [&](const accelops::LionTable& tab) {
        return accelops::launch_fused_lion(param_code, state_code, tab, hyper, stream);
    });
    STD_TORCH_CHECK(err != accelops::kLionTooLarge, "fused_lion: a param is too large (over 2**31 chunks)");
    STD_TORCH_CHECK(err == cudaSuccess, "fused_lion: kernel launch failed: ",
                    cudaGetErrorString(static_cast<cudaError_t>(err)));
}

// One Lion step over every tensor of the lists, in place (params and exp_avgs).
void fused_lion_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                     const std::vector<Tensor>& exp_avgs, double lr, double beta1, double beta2,
                     double weight_decay) {
    validate(params, grads, exp_avgs);
    if (params.empty()) return;
    const int32_t index = params[0].get_device_index();
    const torch::stable::accelerator::DeviceGuard guard(index);
    const accelops::LionHyper hyper = accelops::lion_hyper(lr, beta1, beta2, weight_decay);

    std::map<std::pair<int, int>, std::vector<size_t>> buckets;
    for (size_t i = 0; i < params.size(); ++i) {
        buckets[{dtype_code(params[i].scalar_type()), dtype_code(exp_avgs[i].scalar_type())}].push_back(i);
    }
    const cudaStream_t stream = accelops::current_stream(index);
    for (const auto& kv : buckets) {
        run_bucket(kv.first.first, kv.first.second, kv.second, params, grads, exp_avgs, hyper, stream);
    }
}

}  // namespace

ACCELOPS_LIBRARY(m) {
    // Multi-tensor Lion step, in place (params and exp_avgs are updated).
    m.def("fused_lion_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, float lr, float beta1, "
          "float beta2, float weight_decay) -> ()");
}

ACCELOPS_LIBRARY_IMPL(CUDA, m) {
    m.impl("fused_lion_step", TORCH_BOX(&fused_lion_step));
}
