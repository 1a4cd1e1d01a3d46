"""The one error type of accelops.comm."""


class DistributedInitError(RuntimeError):
    """Distributed set-up failed: bad or conflicting launcher variables, no master address or port,
    a port in use, or peers that did not join in time.

    The message says what was expected and which variables were seen. ``seen`` holds those
    variables (name -> value) for programs that want them.
    """

    def __init__(self, message: str, seen=None):
        self.seen = dict(seen or {})
        if self.seen:
            listed = ", ".join(f"{k}={v!r}" for k, v in sorted(self.seen.items()))
            message = f"{message} (variables seen: {listed})"
        super().__init__(message)
