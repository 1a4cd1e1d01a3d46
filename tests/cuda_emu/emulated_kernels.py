"""Python calls into the emulated CUDA kernels (see emu_build.py), on CPU tensors.

Every tensor handed to a kernel is a view into a larger buffer with guard elements on both sides:
NaN before and after inputs (an out-of-bounds read turns a result into NaN) and a sentinel around
outputs (an out-of-bounds write is reported). Views keep 16-byte alignment unless asked otherwise.
"""
import ctypes
import math

import torch

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
GUARD = 64            # elements on each side of every tensor
SENTINEL = 12345.0
_P = ctypes.c_void_p


class GuardedTensor:
    """A contiguous tensor placed inside a guarded buffer; ``misalign`` shifts it by elements."""

    def __init__(self, values, fill, misalign=0):
        flat = values.reshape(-1)
        self.buffer = torch.full((2 * GUARD + flat.numel() + misalign,), fill, dtype=values.dtype)
        self.start = GUARD + misalign
        self.tensor = self.buffer[self.start:self.start + flat.numel()].view(values.shape)
        self.tensor.copy_(values)
        self.fill = fill

    def ptr(self):
        return _P(self.tensor.data_ptr())

    def check_guards(self, what):
        before, after = self.buffer[:self.start], self.buffer[self.start + self.tensor.numel():]
        for part in (before, after):
            same = torch.isnan(part) if math.isnan(self.fill) else part == self.fill
            if not bool(same.all()):
                raise AssertionError(f"{what}: the kernel wrote outside the tensor")


def _guard_input(t, misalign=0):
    return GuardedTensor(t.contiguous(), float("nan"), misalign)


def _guard_output(shape, dtype, misalign=0):
    return GuardedTensor(torch.full(shape, SENTINEL, dtype=dtype), SENTINEL, misalign)


class EmulatedLayerNorm:
    """accelops' add + layer norm launchers (plan, forward, backward) run under the host emulation."""

    def __init__(self, lib):
        self.lib = lib
        lib.emu_ln_plan.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                                    ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.emu_ln_fwd.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)] + [_P] * 8 + [
            ctypes.c_int64, ctypes.c_int, ctypes.c_float]
        lib.emu_ln_bwd.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)] + [_P] * 9 + [
            ctypes.c_int64, ctypes.c_int]
        lib.emu_ln_bwd_workspace_floats.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int64, ctypes.c_int]
        lib.emu_ln_bwd_workspace_floats.restype = ctypes.c_longlong

    def plan(self, dtype, rows, n, sm_count, backward, aligned=True):
        """The launcher's plan as a dict (vec, cached, bx, by, grid, parts)."""
        out = (ctypes.c_int * 6)()
        self.lib.emu_ln_plan(torch.tensor([], dtype=dtype).element_size(), int(aligned), rows, n, sm_count,
                             int(backward), out)
        return dict(zip(("vec", "cached", "bx", "by", "grid", "parts"), list(out)))

    def workspace_floats(self, plan, rows, n):
        """fp32 elements of the backward's workspace for this plan (layer_norm_bwd_workspace_floats)."""
        return self.lib.emu_ln_bwd_workspace_floats(_plan_array(plan), rows, n)

    def forward(self, x, r, w, b, eps, sm_count, misalign=0):
        """(y, s, mean, rstd) like accelops::add_layer_norm_fwd; r may be None."""
        rows, n = x.shape
        gx, gw, gb = _guard_input(x, misalign), _guard_input(w), _guard_input(b)
        gr = _guard_input(r) if r is not None else None
        gs = _guard_output(x.shape, x.dtype) if r is not None else None
        gy = _guard_output(x.shape, x.dtype)
        gmean, grstd = _guard_output((rows,), torch.float32), _guard_output((rows,), torch.float32)
        plan = self.plan(x.dtype, rows, n, sm_count, False, aligned=misalign == 0)
        err = self.lib.emu_ln_fwd(DTYPE_CODES[x.dtype], _plan_array(plan), gx.ptr(),
                                  gr.ptr() if gr else None, gs.ptr() if gs else None, gy.ptr(), gw.ptr(),
                                  gb.ptr(), gmean.ptr(), grstd.ptr(), rows, n, eps)
        if err != 0:
            raise RuntimeError(f"forward launch failed with cudaError {err}")
        for name, g in (("s", gs), ("y", gy), ("mean", gmean), ("rstd", grstd)):
            if g is not None:
                g.check_guards(name)
        s = gs.tensor.clone() if gs else torch.empty(0, dtype=x.dtype)
        return gy.tensor.clone(), s, gmean.tensor.clone(), grstd.tensor.clone()

    def backward(self, dy, inp, mean, rstd, w, sm_count, misalign=0):
        """(grad_input, grad_weight, grad_bias) like accelops::add_layer_norm_bwd."""
        rows, n = inp.shape
        plan = self.plan(inp.dtype, rows, n, sm_count, True, aligned=misalign == 0)
        gdy, ginp, gw = _guard_input(dy), _guard_input(inp, misalign), _guard_input(w)
        gmean, grstd = _guard_input(mean), _guard_input(rstd)
        gdx = _guard_output(inp.shape, inp.dtype)
        ggw, ggb = _guard_output((n,), w.dtype), _guard_output((n,), w.dtype)
        gws = _guard_output((self.workspace_floats(plan, rows, n),), torch.float32)
        err = self.lib.emu_ln_bwd(DTYPE_CODES[inp.dtype], _plan_array(plan), gdy.ptr(), ginp.ptr(), gmean.ptr(),
                                  grstd.ptr(), gw.ptr(), gdx.ptr(), ggw.ptr(), ggb.ptr(), gws.ptr(), rows, n)
        if err != 0:
            raise RuntimeError(f"backward launch failed with cudaError {err}")
        for name, g in (("grad_input", gdx), ("grad_weight", ggw), ("grad_bias", ggb), ("workspace", gws)):
            g.check_guards(name)
        return gdx.tensor.clone(), ggw.tensor.clone(), ggb.tensor.clone()


def _plan_array(plan):
    return (ctypes.c_int * 6)(*(plan[k] for k in ("vec", "cached", "bx", "by", "grid", "parts")))


class EmulatedFusedAdam:
    """accelops' multi-tensor fused Adam (the binding's table filler and the kernel) under the emulation."""

    def __init__(self, lib):
        self.lib = lib
        lib.emu_adam_step.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int] + [ctypes.POINTER(_P)] * 5 + [
            ctypes.POINTER(ctypes.c_int64)] + [ctypes.c_float] * 5 + [ctypes.c_int, ctypes.c_int, _P, _P,
                                                                      ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        self.max_tensors = lib.emu_adam_max_tensors()   # tensors per launch table (128 CUDA, 32 ROCm)


    def step(self, params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
             adam_w_mode=True, bias_correction=True, grad_scale=None, found_inf=None, misalign=None,
             max_blocks=0, numels=None):
        """One step like accelops' fused_adam_step over tensors of one (param, state) dtype pair.

        params, exp_avgs and exp_avg_sqs are updated in place (through guarded copies); steps are
        one-element float32 tensors (already incremented); grad_scale/found_inf are optional ones.
        misalign maps "param", "grad", "exp_avg" or "exp_avg_sq" to an element shift of those tensors.
        max_blocks > 0 makes tables hold fewer chunks; numels replaces the element counts passed to
        the launcher. Returns the number of kernel launches; raises on a nonzero result.
        """
        misalign = misalign or {}
        written = {"param": params, "exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs}
        guarded = {k: [GuardedTensor(t.contiguous(), SENTINEL, misalign.get(k, 0)) for t in ts]
                   for k, ts in written.items()}
        guarded["grad"] = [_guard_input(g, misalign.get("grad", 0)) for g in grads]
        guarded["step"] = [_guard_input(s.reshape(1)) for s in steps]
        scalars = [_guard_input(t.reshape(1)) if t is not None else None for t in (grad_scale, found_inf)]
        n = len(params)
        ptrs = {k: (_P * n)(*(g.tensor.data_ptr() for g in gs)) for k, gs in guarded.items()}
        sizes = numels if numels is not None else [p.numel() for p in params]
        launches = ctypes.c_int(0)
        err = self.lib.emu_adam_step(
            DTYPE_CODES[params[0].dtype], DTYPE_CODES[exp_avgs[0].dtype], n, ptrs["param"], ptrs["grad"],
            ptrs["exp_avg"], ptrs["exp_avg_sq"], ptrs["step"], (ctypes.c_int64 * n)(*sizes), lr, beta1, beta2,
            eps, weight_decay, int(adam_w_mode), int(bias_correction), *(g.ptr() if g else None for g in scalars),
            max_blocks, ctypes.byref(launches))
        if err != 0:
            raise RuntimeError(f"fused Adam step failed with result {err}")
        for name, gs in guarded.items():
            for i, g in enumerate(gs):
                g.check_guards(f"{name}[{i}]")
        for g in scalars:
            if g is not None:
                g.check_guards("grad_scale/found_inf")
        for k, ts in written.items():
            for t, g in zip(ts, guarded[k]):
                t.copy_(g.tensor.view(t.shape))
        return launches.value


class EmulatedFusedLion:
    """accelops' multi-tensor fused Lion (the binding's table filler, its hyperparameter rounding and the
    kernel) under the emulation."""

    def __init__(self, lib):
        self.lib = lib
        lib.emu_lion_step.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int] + [ctypes.POINTER(_P)] * 3 + [
            ctypes.POINTER(ctypes.c_int64)] + [ctypes.c_double] * 4 + [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        self.max_tensors = lib.emu_lion_max_tensors()   # tensors per launch table (128 CUDA, 32 ROCm)

    def step(self, params, grads, exp_avgs, lr, beta1, beta2, weight_decay, misalign=None, max_blocks=0,
             numels=None):
        """One step like accelops' fused_lion_step over tensors of one (param, state) dtype pair.

        params and exp_avgs are updated in place (through guarded copies). misalign maps "param", "grad" or
        "exp_avg" to an element shift of those tensors; max_blocks > 0 makes tables hold fewer chunks; numels
        replaces the element counts passed to the launcher. Returns the number of kernel launches; raises on
        a nonzero result.
        """
        misalign = misalign or {}
        written = {"param": params, "exp_avg": exp_avgs}
        guarded = {k: [GuardedTensor(t.contiguous(), SENTINEL, misalign.get(k, 0)) for t in ts]
                   for k, ts in written.items()}
        guarded["grad"] = [_guard_input(g, misalign.get("grad", 0)) for g in grads]
        n = len(params)
        ptrs = {k: (_P * n)(*(g.tensor.data_ptr() for g in gs)) for k, gs in guarded.items()}
        sizes = numels if numels is not None else [p.numel() for p in params]
        launches = ctypes.c_int(0)
        err = self.lib.emu_lion_step(DTYPE_CODES[params[0].dtype], DTYPE_CODES[exp_avgs[0].dtype], n, ptrs["param"],
                                     ptrs["grad"], ptrs["exp_avg"], (ctypes.c_int64 * n)(*sizes), lr, beta1, beta2,
                                     weight_decay, max_blocks, ctypes.byref(launches))
        if err != 0:
            raise RuntimeError(f"fused Lion step failed with result {err}")
        for name, gs in guarded.items():
            for i, g in enumerate(gs):
                g.check_guards(f"{name}[{i}]")
        for k, ts in written.items():
            for t, g in zip(ts, guarded[k]):
                t.copy_(g.tensor.view(t.shape))
        return launches.value


def _guard_index(t):
    """An int32 index tensor between guards far out of every range (a read past it indexes far away)."""
    return GuardedTensor(t.contiguous(), 2**30)


class EmulatedMoEDispatch:
    """accelops' MoE dispatch/combine launchers run under the host emulation, with the route -> buffer-row
    table made by its launcher first (as the binding does)."""

    def __init__(self, lib):
        self.lib = lib
        i64 = ctypes.c_int64
        lib.emu_moe_build_source.argtypes = [_P, _P, i64, i64, i64, _P]
        lib.emu_moe_dispatch.argtypes = [ctypes.c_int, _P, _P, _P, _P, i64, i64, i64]
        lib.emu_moe_combine.argtypes = [ctypes.c_int, _P, _P, _P, _P, _P, i64, i64, i64, i64, i64]
        lib.emu_moe_combine_bwd.argtypes = [ctypes.c_int, _P, _P, _P, _P, _P, _P, i64, i64, i64]

    def _source(self, expert, slot, capacity, rows):
        ge, gs = _guard_index(expert), _guard_index(slot)
        gsrc = GuardedTensor(torch.full((max(rows, 1),), 777, dtype=torch.int32), 12345)
        err = self.lib.emu_moe_build_source(ge.ptr(), gs.ptr(), expert.numel(), capacity, rows, gsrc.ptr())
        if err != 0:
            raise RuntimeError(f"source table launch failed with cudaError {err}")
        gsrc.check_guards("source")
        return gsrc, ge, gs

    def dispatch(self, tokens, expert, slot, weight, num_experts, capacity):
        """The [E, C, M] buffer like accelops::moe_dispatch."""
        s, m = tokens.shape
        rows = num_experts * capacity
        gsrc, _ge, _gs = self._source(expert, slot, capacity, rows)
        gx = _guard_input(tokens)
        gw = _guard_input(weight) if weight is not None else None
        gbuf = _guard_output((num_experts, capacity, m), tokens.dtype)
        err = self.lib.emu_moe_dispatch(DTYPE_CODES[tokens.dtype], gx.ptr(), gsrc.ptr(), gw.ptr() if gw else None,
                                        gbuf.ptr(), rows, s, m)
        if err != 0:
            raise RuntimeError(f"dispatch launch failed with cudaError {err}")
        gbuf.check_guards("buffer")
        return gbuf.tensor.clone()

    def combine(self, expert_output, expert, slot, weight):
        """[S, M] like accelops::moe_combine."""
        e, c, m = expert_output.shape
        k, s = expert.shape
        gy, ge, gs = _guard_input(expert_output), _guard_index(expert), _guard_index(slot)
        gw = _guard_input(weight) if weight is not None else None
        gout = _guard_output((s, m), expert_output.dtype)
        err = self.lib.emu_moe_combine(DTYPE_CODES[expert_output.dtype], gy.ptr(), ge.ptr(), gs.ptr(),
                                       gw.ptr() if gw else None, gout.ptr(), k, s, e, c, m)
        if err != 0:
            raise RuntimeError(f"combine launch failed with cudaError {err}")
        gout.check_guards("out")
        return gout.tensor.clone()

    def combine_bwd(self, grad_out, expert_output, expert, slot, gate):
        """(grad_expert_output, grad_gate) like accelops::moe_combine_bwd."""
        e, c, m = expert_output.shape
        s = grad_out.shape[0]
        gsrc, _ge, _gs = self._source(expert, slot, c, e * c)
        gg, gy, gw = _guard_input(grad_out), _guard_input(expert_output), _guard_input(gate)
        ggy = _guard_output(expert_output.shape, expert_output.dtype)
        ggate = GuardedTensor(torch.zeros(gate.shape), SENTINEL)  # the binding zeroes it
        err = self.lib.emu_moe_combine_bwd(DTYPE_CODES[expert_output.dtype], gg.ptr(), gy.ptr(), gsrc.ptr(), gw.ptr(),
                                           ggy.ptr(), ggate.ptr(), e * c, s, m)
        if err != 0:
            raise RuntimeError(f"combine backward launch failed with cudaError {err}")
        ggy.check_guards("grad_expert_output")
        ggate.check_guards("grad_gate")
        return ggy.tensor.clone(), ggate.tensor.clone()
