// Page-locked host memory (torch stable ABI): flat CPU tensors whose pages are mlock'ed, so the kernel keeps
// them resident and a DMA engine can read them. POSIX only (mmap, mlock); Windows is refused by the builder.
//
//   alloc_locked(int numel, Tensor like) -> Tensor   numel elements of like's dtype, page aligned, locked
//   unlock(int address) -> bool                      munlock the allocation starting at address (true), or
//                                                    false when no locked allocation starts there
//   is_locked(Tensor t) -> bool                      t's bytes lie inside one locked allocation
//   locked_ranges() -> int[]                         [begin, end, begin, end, ...] of the locked allocations
//
// Lifetime: the memory is unmapped (and munlocked if still locked) by the tensor storage's deleter, when the
// last tensor using it dies. unlock() only ends the locking early: the memory stays valid while any tensor
// still uses it, so an explicit unpin never leaves a view pointing at freed memory, and an address is never
// handed out twice while the registry still holds it.
#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "accelops_stable.h"

namespace {

using torch::stable::Tensor;

struct Allocation {
  int64_t bytes;    // what the tensor uses
  size_t mapped;    // what was mapped (whole pages, at least one)
  bool locked;
};

struct Registry {
  std::mutex mutex;
  std::map<uintptr_t, Allocation> allocations;
};

// Never destroyed: storages may die during interpreter shutdown, after static destructors would have run.
Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

std::string limit_text(rlim_t value) {
  return value == RLIM_INFINITY ? std::string("unlimited") : std::to_string(uint64_t(value)) + " bytes";
}

// The storage deleter: the last tensor using the memory is gone.
void release(void* data) {
  Registry& r = registry();
  std::lock_guard<std::mutex> guard(r.mutex);
  auto it = r.allocations.find(reinterpret_cast<uintptr_t>(data));
  if (it == r.allocations.end()) return;
  if (it->second.locked) munlock(data, it->second.mapped);
  munmap(data, it->second.mapped);
  r.allocations.erase(it);
}

Tensor alloc_locked(int64_t numel, Tensor like) {
  if (numel < 0) throw std::invalid_argument("pin_memory: numel must be >= 0, got " + std::to_string(numel));
  const int64_t elem = int64_t(like.element_size());
  if (numel > 0 && numel > INT64_MAX / elem)
    throw std::invalid_argument("pin_memory: " + std::to_string(numel) + " elements overflow the byte count");
  const int64_t bytes = numel * elem;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const size_t mapped = bytes == 0 ? page : (size_t(bytes) + page - 1) / page * page;
  void* data = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) {
    const int err = errno;
    throw std::runtime_error("pin_memory: cannot map " + std::to_string(mapped) + " bytes: " + std::strerror(err));
  }
  if (mlock(data, mapped) != 0) {
    const int err = errno;
    munmap(data, mapped);
    struct rlimit limit {};
    getrlimit(RLIMIT_MEMLOCK, &limit);
    throw std::runtime_error(
        "pin_memory: mlock of " + std::to_string(mapped) + " bytes (" + std::to_string(numel) + " elements of " +
        std::to_string(elem) + " bytes, rounded up to whole pages) failed: " + std::strerror(err) +
        ". RLIMIT_MEMLOCK is " + limit_text(limit.rlim_cur) + " (hard limit " + limit_text(limit.rlim_max) +
        ") for this process, including memory it has locked already; raise it (`ulimit -l`, `LimitMEMLOCK=` in "
        "systemd, `--ulimit memlock=-1` in docker) or pin less");
  }
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> guard(r.mutex);
    r.allocations[reinterpret_cast<uintptr_t>(data)] = Allocation{bytes, mapped, true};
  }
  const int64_t sizes[1] = {numel};
  const int64_t strides[1] = {1};
  return torch::stable::from_blob(data, torch::headeronly::IntHeaderOnlyArrayRef(sizes, 1),
                                  torch::headeronly::IntHeaderOnlyArrayRef(strides, 1),
                                  torch::stable::Device(torch::headeronly::DeviceType::CPU), like.scalar_type(),
                                  &release);
}

bool unlock(int64_t address) {
  Registry& r = registry();
  std::lock_guard<std::mutex> guard(r.mutex);
  auto it = r.allocations.find(uintptr_t(address));
  if (it == r.allocations.end() || !it->second.locked) return false;
  munlock(reinterpret_cast<void*>(it->first), it->second.mapped);
  it->second.locked = false;
  return true;
}

bool is_locked(Tensor t) {
  if (!t.is_cpu()) return false;
  // The byte span the tensor reads: from its first element to its last one, whatever its strides.
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  int64_t last = 0;
  if (t.numel() > 0) {
    const auto sizes = t.sizes();
    const auto strides = t.strides();
    for (int64_t d = 0; d < t.dim(); ++d) last += (sizes[d] - 1) * (strides[d] < 0 ? -strides[d] : strides[d]);
  }
  const uintptr_t end = begin + uintptr_t(t.numel() > 0 ? (last + 1) * int64_t(t.element_size()) : 0);
  Registry& r = registry();
  std::lock_guard<std::mutex> guard(r.mutex);
  auto it = r.allocations.upper_bound(begin);  // the first allocation starting after begin
  if (it == r.allocations.begin()) return false;
  --it;
  const uintptr_t limit = it->first + uintptr_t(it->second.bytes);
  return it->second.locked && begin >= it->first && end <= limit && (begin < limit || it->second.bytes == 0);
}

std::vector<int64_t> locked_ranges() {
  Registry& r = registry();
  std::lock_guard<std::mutex> guard(r.mutex);
  std::vector<int64_t> out;
  for (const auto& kv : r.allocations)
    if (kv.second.locked) {
      out.push_back(int64_t(kv.first));
      out.push_back(int64_t(kv.first + uintptr_t(kv.second.bytes)));
    }
  return out;
}

}  // namespace

// The schema's types must match the C++ signature exactly (int = int64_t): nothing checks it.
ACCELOPS_LIBRARY(m) {
  m.def("alloc_locked(int numel, Tensor like) -> Tensor");
  m.def("unlock(int address) -> bool");
  m.def("is_locked(Tensor t) -> bool");
  m.def("locked_ranges() -> int[]");
}

ACCELOPS_LIBRARY_IMPL(CPU, m) {
  m.impl("alloc_locked", TORCH_BOX(&alloc_locked));
  m.impl("is_locked", TORCH_BOX(&is_locked));
}

// No tensor arguments, so no dispatch key to pick CPU from.
ACCELOPS_LIBRARY_IMPL(CompositeExplicitAutograd, m) {
  m.impl("unlock", TORCH_BOX(&unlock));
  m.impl("locked_ranges", TORCH_BOX(&locked_ranges));
}
