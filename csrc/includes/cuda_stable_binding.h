// Shared by the host bindings of the CUDA ops (torch stable ABI; compiled by the host compiler, never by
// nvcc, so the kernel files stay free of torch headers): dtype codes of tensors, the current stream.
#pragma once

#include <cuda_runtime_api.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/tensor.h>
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

}  // namespace accelops
