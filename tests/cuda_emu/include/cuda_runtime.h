// Host emulation of the small part of the CUDA runtime and device language that the accelops
// kernels use, so their .cu sources run on a CPU in tests (see tests/cuda_emu/README.md).
//
// A launch runs its blocks one after another; the threads of a block are fibers (ucontext) on the
// calling thread, switched at __syncthreads and warp shuffles. Each warp runs alone up to the next
// __syncthreads; blocks, warps and lanes take turns in index order, or in reverse order after
// cuda_emu::set_reverse_order(true), so code that needs a missing barrier gives a different answer
// under one of the orders. A shuffle that some lanes of a warp never reach, or threads waiting at
// different __syncthreads (count or source line), are reported as a divergence error instead of
// hanging. Threads that have returned do not hold up __syncthreads (as on current GPUs).
// Shared memory (`__shared__`) is a static variable: one copy, reused by each block in turn and
// poisoned (0xFF bytes) at the start of each block by cuda_emu::poison_shared.
#pragma once

#include <setjmp.h>
#include <sys/mman.h>
#include <unistd.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

inline float rsqrtf(float v) { return 1.f / std::sqrt(v); }

namespace cuda_emu {

#if defined(USE_ROCM)
constexpr int kWarp = 64;   // the kernels' ROCm branches (built with -DUSE_ROCM) assume 64-lane wavefronts
#else
constexpr int kWarp = 32;
#endif
constexpr size_t kStackBytes = 256 * 1024;

enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
    ucontext_t start;   // entry context; later switches use _setjmp/_longjmp (no signal-mask syscalls)
    jmp_buf ctx;
    bool started = false;
    dim3 tid;
    State state = State::kRunnable;
    int shuffle_phase = 0;
    long long syncs = 0;   // __syncthreads calls so far in this block
    int sync_line = 0;     // source line of the __syncthreads this thread waits at
};

// A fiber's stack with an inaccessible page below it, so an overflow faults instead of corrupting memory.
class Stack {
public:
    Stack() : guard_(static_cast<size_t>(sysconf(_SC_PAGESIZE))) {
        void* p = mmap(nullptr, guard_ + kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "cuda_emu: cannot map a fiber stack\n");
            std::abort();
        }
        base_ = static_cast<char*>(p);
        mprotect(base_, guard_, PROT_NONE);
    }
    ~Stack() { munmap(base_, guard_ + kStackBytes); }
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;
    char* top_region() const { return base_ + guard_; }   // kStackBytes usable bytes

private:
    size_t guard_;
    char* base_;
};

struct Runtime {
    std::vector<Fiber> fibers;
    std::vector<std::unique_ptr<Stack>> stacks;
    jmp_buf scheduler;
    ucontext_t scheduler_start;
    int current = -1;
    std::function<void()> body;
    std::vector<float> shuffle_slots[2];
    cudaError_t last_error = cudaSuccess;
    std::string divergence;   // set when a barrier cannot be released
    bool reverse_order = false;
    long long block_serial = 0;                    // blocks started so far (all launches)
    std::map<const void*, long long> poisoned_in;   // shared array -> block_serial of its last poisoning
};

inline Runtime& rt() {
    static Runtime r;
    return r;
}

inline void set_reverse_order(bool reverse) { rt().reverse_order = reverse; }

inline void wait_at(State s) {
    Runtime& r = rt();
    r.fibers[r.current].state = s;
    if (_setjmp(r.fibers[r.current].ctx) == 0) _longjmp(r.scheduler, 1);
}

inline void fiber_entry() {
    Runtime& r = rt();
    r.body();
    r.fibers[r.current].state = State::kDone;
    _longjmp(r.scheduler, 1);
}

// Runs fiber i until it waits at a barrier or returns.
inline void resume(int i) {
    Runtime& r = rt();
    Fiber& f = r.fibers[i];
    r.current = i;
    threadIdx = f.tid;
    if (_setjmp(r.scheduler) != 0) return;
    if (f.started) _longjmp(f.ctx, 1);
    f.started = true;
    swapcontext(&r.scheduler_start, &f.start);
}

inline std::string where() {
    return "block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
           std::to_string(blockIdx.z) + ")";
}

// Runs the threads [w0, w1) of one warp, releasing its shuffles, until each has returned or waits
// at __syncthreads. False (with the reason recorded) when the warp's lanes diverge at a shuffle.
inline bool run_warp(int w0, int w1) {
    Runtime& r = rt();
    for (;;) {
        for (int k = w0; k < w1; ++k) {
            const int i = r.reverse_order ? w1 - 1 - (k - w0) : k;
            if (r.fibers[i].state == State::kRunnable) resume(i);
        }
        int at_shuffle = 0;
        for (int i = w0; i < w1; ++i) at_shuffle += r.fibers[i].state == State::kAtWarpBarrier;
        if (at_shuffle == 0) return true;
        if (at_shuffle != w1 - w0) {
            r.divergence = where() + ", warp " + std::to_string(w0 / kWarp) +
                           ": a shuffle that not every lane reaches (divergent, or lanes returned)";
            return false;
        }
        for (int i = w0; i < w1; ++i) r.fibers[i].state = State::kRunnable;
    }
}

// Runs the current block's threads until all have returned; false on a divergence. Each warp runs
// on its own up to the next __syncthreads before the next warp starts (in warp order, or reverse
// order), so a missing __syncthreads between warps shows as a wrong result.
inline bool run_block(int threads) {
    Runtime& r = rt();
    for (int i = 0; i < threads; ++i) {
        Fiber& f = r.fibers[i];
        f.state = State::kRunnable;
        f.shuffle_phase = 0;
        f.syncs = 0;
        f.started = false;
        getcontext(&f.start);
        f.start.uc_stack.ss_sp = r.stacks[i]->top_region();
        f.start.uc_stack.ss_size = kStackBytes;
        f.start.uc_link = nullptr;
        makecontext(&f.start, fiber_entry, 0);
    }
    const int warps = (threads + kWarp - 1) / kWarp;
    for (;;) {
        for (int k = 0; k < warps; ++k) {
            const int w = r.reverse_order ? warps - 1 - k : k;
            const int w0 = w * kWarp;
            if (!run_warp(w0, w0 + kWarp < threads ? w0 + kWarp : threads)) return false;
        }
        long long syncs = -1;
        int line = 0;
        for (int i = 0; i < threads; ++i) {
            const Fiber& f = r.fibers[i];
            if (f.state != State::kAtBlockBarrier) continue;
            if (syncs >= 0 && (f.syncs != syncs || f.sync_line != line)) {
                r.divergence = where() + ": threads wait at different __syncthreads (call " + std::to_string(syncs) +
                               " at line " + std::to_string(line) + ", call " + std::to_string(f.syncs) +
                               " at line " + std::to_string(f.sync_line) + ")";
                return false;
            }
            syncs = f.syncs;
            line = f.sync_line;
        }
        for (int i = 0; i < threads; ++i) {
            if (r.fibers[i].state == State::kAtBlockBarrier) r.fibers[i].state = State::kRunnable;
        }
        if (syncs < 0) return true;   // every thread has returned
    }
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...) is rewritten to
// cuda_emu::Launch(grid, block, shared_bytes, stream)(kernel, args...).
struct Launch {
    dim3 grid, block;
    Launch(dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr) : grid(g), block(b) {}

    template <typename... Params, typename... Args>
    void operator()(void (*kernel)(Params...), Args&&... args) const {
        Runtime& r = rt();
        const long long threads = static_cast<long long>(block.x) * block.y * block.z;
        if (threads < 1 || threads > 1024 || block.z > 64 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
            grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
            r.last_error = cudaErrorInvalidConfiguration;
            return;
        }
        const int n = static_cast<int>(threads);
        r.fibers.assign(n, Fiber{});
        while (static_cast<int>(r.stacks.size()) < n) r.stacks.emplace_back(new Stack());
        for (int i = 0; i < n; ++i) {
            r.fibers[i].tid = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
        }
        r.shuffle_slots[0].assign(n, 0.f);
        r.shuffle_slots[1].assign(n, 0.f);
        std::tuple<Params...> copies(std::forward<Args>(args)...);   // by value, like kernel arguments
        r.body = [&]() { std::apply(kernel, copies); };
        blockDim = block;
        gridDim = grid;
        const long long blocks = static_cast<long long>(grid.x) * grid.y * grid.z;
        for (long long k = 0; k < blocks; ++k) {
            const long long b = r.reverse_order ? blocks - 1 - k : k;
            blockIdx = dim3(b % grid.x, (b / grid.x) % grid.y, b / (static_cast<long long>(grid.x) * grid.y));
            ++r.block_serial;
            if (!run_block(n)) {
                std::fprintf(stderr, "cuda_emu: %s\n", r.divergence.c_str());
                std::abort();
            }
        }
        r.body = nullptr;
    }
};

}  // namespace cuda_emu

namespace cuda_emu {

inline void syncthreads_at(int line) {
    Runtime& r = rt();
    ++r.fibers[r.current].syncs;
    r.fibers[r.current].sync_line = line;
    wait_at(State::kAtBlockBarrier);
}

}  // namespace cuda_emu

// A macro, so each call records its source line: threads at two different barriers are a divergence.
#define __syncthreads() ::cuda_emu::syncthreads_at(__LINE__)

namespace cuda_emu {

// Called (by the rewritten source) right after each __shared__ declaration: the first thread of a
// block to get there fills the array with 0xFF bytes (NaN as floats), so a read of shared memory the
// block has not written does not see an earlier block's values.
inline void poison_shared(void* array, size_t bytes) {
    Runtime& r = rt();
    long long& last = r.poisoned_in[array];
    if (last == r.block_serial) return;
    last = r.block_serial;
    std::memset(array, 0xFF, bytes);
}

}  // namespace cuda_emu

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    cuda_emu::Runtime& r = cuda_emu::rt();
    const int self = r.current;
    const int lane = self % cuda_emu::kWarp;
    const int partner = self - lane + (lane ^ lane_mask);
    const int phase = r.fibers[self].shuffle_phase;
    r.shuffle_slots[phase][self] = v;
    cuda_emu::wait_at(cuda_emu::State::kAtWarpBarrier);
    r.fibers[self].shuffle_phase ^= 1;
    return r.shuffle_slots[phase][partner];
}

// HIP's spelling (the kernels' ROCm branch).
inline float __shfl_xor(float v, int lane_mask, int = cuda_emu::kWarp) { return __shfl_xor_sync(0u, v, lane_mask); }

template <typename T>
inline T atomicAdd(T* address, T v) {
    const T old = *address;
    *address = old + v;
    return old;
}

// Round-to-nearest float add/multiply intrinsics (no contraction; the host build contracts nothing either).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }

inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t = nullptr) {
    std::memset(ptr, value, bytes);
    return cudaSuccess;
}

inline cudaError_t cudaGetLastError() {
    const cudaError_t e = cuda_emu::rt().last_error;
    cuda_emu::rt().last_error = cudaSuccess;
    return e;
}

inline const char* cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error" : e == cudaErrorInvalidValue ? "invalid argument" : "invalid configuration";
}
