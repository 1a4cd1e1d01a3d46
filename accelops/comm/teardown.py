"""Destroying the process groups at interpreter exit, while Python can still run other threads.

Why: most DeepSpeed scripts never call ``destroy_process_group``. Their process groups then die
during interpreter finalisation, and with gloo that aborts the process now and then ("terminate
called without an active exception", SIGABRT; 4 of 50 two-rank jobs on a 2-core CPU machine,
0 of 50 with this module). The cause, seen in a backtrace of the aborting rank: a gloo worker thread
(``pt_gloo_runloop``) drops its reference to the script's last collective (``AsyncWork``) only
after the script's ``wait()`` has returned. Dropping it releases the work's tensors, and releasing a
tensor that has a Python object needs the GIL. If the main thread has meanwhile entered
``Py_FinalizeEx``, CPython ends any thread that asks for the GIL with ``pthread_exit``, whose forced
unwinding through the (``noexcept``) destructor calls ``std::terminate``.

So :func:`destroy_at_exit` registers an ``atexit`` function: atexit functions run before
finalisation begins, and destroying the groups there (``torch.distributed.destroy_process_group``,
which shuts every group down and joins gloo's worker threads) lets those threads finish normally.
Unreachable objects are collected first (an engine's module hooks make cycles that hold DDP/FSDP
state on the groups), as a script that tidies up itself would do.
"""
import atexit
import gc
import os
import sys
from typing import Callable

_registered_in = {"pid": None}


def destroy_at_exit(destroy: Callable[[], None]) -> None:
    """Make sure the process groups are destroyed at interpreter exit in this process: an ``atexit``
    function (registered once per process) calls ``destroy`` (:func:`accelops.comm.init.destroy`)
    if a default group still exists then. Idempotent; at exit it does nothing when the script
    destroyed its groups itself."""
    if _registered_in["pid"] == os.getpid():
        return
    _registered_in["pid"] = os.getpid()
    atexit.register(_destroy_now, destroy)


def _destroy_now(destroy: Callable[[], None]) -> None:
    """The atexit function: collect garbage, then ``destroy()`` if a default group still exists.
    Only in the process that registered it (not in a forked child that inherited the registration)."""
    if _registered_in["pid"] != os.getpid():
        return
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    gc.collect()
    try:
        destroy()
    except Exception as exc:  # at exit: say it, never mask the script's own exit status
        print(f"accelops: destroying the process group at exit failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
