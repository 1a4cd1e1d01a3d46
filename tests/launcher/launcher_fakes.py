"""Stand-ins shared by the launcher tests."""


class FakeAccelerator:
    """Only what the launcher asks an accelerator: name, device count, variable names."""

    def __init__(self, name="cuda", count=4, visible=("CUDA_VISIBLE_DEVICES",), prefixes=("NCCL", "CUDA")):
        self.name, self._count, self._visible, self._prefixes = name, count, list(visible), list(prefixes)

    def device_count(self):
        return self._count

    def visible_devices_envs(self):
        return list(self._visible)

    def export_envs(self):
        return list(self._prefixes)
