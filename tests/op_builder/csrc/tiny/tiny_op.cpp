// Test-only op for the build-engine tests, bound like every op through torch's stable ABI (only the
// light stable headers, so each test build takes about a second). Its namespace is TORCH_EXTENSION_NAME.
#include <torch/csrc/stable/library.h>

#include <cstdint>
#include <string>

#include "tiny_scale.h"

#define TINY_LIBRARY(ns, m) STABLE_TORCH_LIBRARY(ns, m)
#define TINY_LIBRARY_IMPL(ns, key, m) STABLE_TORCH_LIBRARY_IMPL(ns, key, m)

namespace {
double scale(double x) { return x * kTinyFactor; }

std::string tier() { return TINY_TIER; }
}  // namespace

TINY_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def("scale(float x) -> float");
  m.def("tier() -> str");
}

TINY_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CompositeExplicitAutograd, m) {
  m.impl("scale", TORCH_BOX(&scale));
  m.impl("tier", TORCH_BOX(&tier));
}
