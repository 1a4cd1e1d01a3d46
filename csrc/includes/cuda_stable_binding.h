// Shared by the host bindings of the CUDA ops (torch stable ABI; compiled by the host compiler, never by
// nvcc, so the kernel files stay free of torch headers): dtype codes of tensors, the current stream, the
// last-line check of a multi-tensor optimizer step's tensors.
#pragma once

#include <cuda_runtime_api.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/Layout.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <cstdint>

#include "accelops_stable.h"
#include "cuda_dtype_codes.h"

namespace accelops {

// The launcher code of a dtype, or -1 when the kernels do not take it.
inline int dtype_code(torch::headeronly::ScalarType t) {
    using torch::headeronly::ScalarType;
    switch (t) {
        case ScalarType::Float: return kF32;
        case ScalarType::Half: return kF16;
        case ScalarType::BFloat16: return kBF16;
        default: return -1;
    }
}

// torch's current stream of device `index` (what c10::cuda::getCurrentCUDAStream(index) returns), through the
// device-generic stable accelerator API (torch >= 2.13).
inline cudaStream_t current_stream(int32_t index) {
    return static_cast<cudaStream_t>(torch::stable::accelerator::getCurrentStream(index).nativeHandle());
}

// Every tensor of one optimizer step (`op` names the op in the message) is dense, contiguous and on
// params[0]'s `device`. Last-line checks only: the Python validators name the culprit first.
inline void check_step_tensor(const char* op, const torch::stable::Tensor& t, const torch::stable::Device& device) {
    STD_TORCH_CHECK(t.layout() == torch::headeronly::Layout::Strided, op,
                    ": tensors must be dense (sparse is not supported)");
    STD_TORCH_CHECK(t.device() == device, op, ": all tensors of one step must be on params[0]'s device");
    STD_TORCH_CHECK(t.is_contiguous(), op, ": tensors must be contiguous");
}

}  // namespace accelops
