// Python binding of the multi-tensor fused Lion kernel: validates the tensor lists, groups them by
// (param dtype, state dtype), fills launch tables and launches on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cstdio>
#include <map>
#include <utility>
#include <vector>

#include "cuda_dtype_codes.h"
#include "cuda_fused_lion.h"

namespace {

int dtype_code(at::ScalarType t) {
    switch (t) {
        case at::kFloat: return accelops::kF32;
        case at::kHalf: return accelops::kF16;
        case at::kBFloat16: return accelops::kBF16;
        default: return -1;
    }
}

// Last-line checks only: accelops.ops.fused_lion validates every input in Python (with messages that
// name the tensor) before calling here. The messages are constant strings on purpose, as in
// fused_adam.cpp: a TORCH_CHECK that formats values segfaulted in one deployment (an ABI mismatch).
void check_tensor(const at::Tensor& t, const at::Device& device) {
    TORCH_CHECK(t.layout() == at::kStrided, "fused_lion: tensors must be dense (sparse is not supported)");
    TORCH_CHECK(t.device() == device, "fused_lion: all tensors of one step must be on params[0]'s device");
    TORCH_CHECK(t.is_contiguous(), "fused_lion: tensors must be contiguous");
}

void validate(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
              const std::vector<at::Tensor>& exp_avgs) {
    const size_t n = params.size();
    TORCH_CHECK(grads.size() == n && exp_avgs.size() == n,
                "fused_lion: params, grads and exp_avgs must have the same length");
    if (n == 0) return;
    const at::Device device = params[0].device();
    TORCH_CHECK(device.is_cuda(), "fused_lion: tensors must be on a CUDA device");
    for (size_t i = 0; i < n; ++i) {
        const at::Tensor& p = params[i];
        check_tensor(p, device);
        check_tensor(grads[i], device);
        check_tensor(exp_avgs[i], device);
        TORCH_CHECK(dtype_code(p.scalar_type()) >= 0, "fused_lion: params must be float32, float16 or bfloat16");
        TORCH_CHECK(grads[i].scalar_type() == p.scalar_type(), "fused_lion: a grad's dtype differs from its param's");
        const at::ScalarType st = exp_avgs[i].scalar_type();
        TORCH_CHECK(st == at::kFloat || st == p.scalar_type(), "fused_lion: exp_avg must be float32 or the param dtype");
        TORCH_CHECK(grads[i].numel() == p.numel() && exp_avgs[i].numel() == p.numel(),
                    "fused_lion: grads and exp_avgs must have as many elements as their params");
    }
}

void check_launch(cudaError_t err) {
    if (err != cudaSuccess) {
        std::fprintf(stderr, "fused_lion: kernel launch failed: %s\n", cudaGetErrorString(err));
        TORCH_CHECK(false, "fused_lion: kernel launch failed (the CUDA error is printed on stderr)");
    }
}

// Launches the tensors at `idx` (one dtype pair) in as many tables as they need.
void run_bucket(int param_code, int state_code, const std::vector<size_t>& idx, const std::vector<at::Tensor>& params,
                const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& exp_avgs,
                const accelops::LionHyper& hyper, cudaStream_t stream) {
    std::vector<accelops::LionTensor> tensors;
    tensors.reserve(idx.size());
    for (size_t i : idx) {
        tensors.push_back({params[i].data_ptr(), grads[i].data_ptr(), exp_avgs[i].data_ptr(), params[i].numel()});
    }
    const int err = accelops::fill_lion_tables(tensors.data(), tensors.size(), [&](const accelops::LionTable& tab) {
        return accelops::launch_fused_lion(param_code, state_code, tab, hyper, stream);
    });
    TORCH_CHECK(err != accelops::kLionTooLarge, "fused_lion: a param is too large (over 2**31 chunks)");
    check_launch(static_cast<cudaError_t>(err));
}

}  // namespace

// One Lion step over every tensor of the lists, in place (params and exp_avgs).
void fused_lion_step(std::vector<at::Tensor> params, std::vector<at::Tensor> grads, std::vector<at::Tensor> exp_avgs,
                     double lr, double beta1, double beta2, double weight_decay) {
    validate(params, grads, exp_avgs);
    if (params.empty()) return;
    const at::Device device = params[0].device();
    const c10::cuda::CUDAGuard guard(device);
    const accelops::LionHyper hyper = accelops::lion_hyper(lr, beta1, beta2, weight_decay);

    std::map<std::pair<int, int>, std::vector<size_t>> buckets;
    for (size_t i = 0; i < params.size(); ++i) {
        buckets[{dtype_code(params[i].scalar_type()), dtype_code(exp_avgs[i].scalar_type())}].push_back(i);
    }
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
    for (const auto& kv : buckets) {
        run_bucket(kv.first.first, kv.first.second, kv.second, params, grads, exp_avgs, hyper, stream);
    }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("fused_lion_step", &fused_lion_step, "Multi-tensor Lion step, in place (params and exp_avgs are updated)");
}
