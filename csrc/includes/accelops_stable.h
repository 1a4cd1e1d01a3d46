// The binding layer of every op: torch's stable ABI (torch/csrc/stable), no pybind, no Python headers.
//
// An op's binding .cpp defines its schema and kernels with
//   ACCELOPS_LIBRARY(m) { m.def("adam_step(Tensor(a!)[] params, ...) -> ()"); }
//   ACCELOPS_LIBRARY_IMPL(CPU, m) { m.impl("adam_step", TORCH_BOX(&adam_step)); }
// in the namespace TORCH_EXTENSION_NAME, which the build defines as the op's module name
// (accelops_<op>_<variant>_<key>): every build of an op has a namespace of its own, so two variants (or
// a prebuilt and a JIT build) never register the same operator twice in one process. Python reaches the
// ops as torch.ops.<module name>.<op> (op_builder's loader does that).
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#ifndef TORCH_EXTENSION_NAME
#error "TORCH_EXTENSION_NAME must name the op's module (the accelops op builder defines it)"
#endif

// One more macro level, so that TORCH_EXTENSION_NAME is expanded before STABLE_TORCH_LIBRARY pastes it.
#define ACCELOPS_STABLE_LIBRARY_(ns, m) STABLE_TORCH_LIBRARY(ns, m)
#define ACCELOPS_STABLE_LIBRARY_IMPL_(ns, key, m) STABLE_TORCH_LIBRARY_IMPL(ns, key, m)
#define ACCELOPS_LIBRARY(m) ACCELOPS_STABLE_LIBRARY_(TORCH_EXTENSION_NAME, m)
#define ACCELOPS_LIBRARY_IMPL(key, m) ACCELOPS_STABLE_LIBRARY_IMPL_(TORCH_EXTENSION_NAME, key, m)
