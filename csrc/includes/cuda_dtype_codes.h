// Element-type codes the CUDA bindings pass to the kernel launchers (no ATen in kernel files).
#pragma once

namespace accelops {

enum DTypeCode : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

}  // namespace accelops
