"""The one error type of accelops.runtime's config and schedule checks."""


class ConfigError(ValueError):
    """A bad DeepSpeed config value, or a bad argument to a scheduler or loss scaler.

    The message starts with the key path of the offending value (``optimizer.params.lr``) when there is
    one; ``path`` holds that path ("" when the error concerns several keys, e.g. the batch triple).
    """

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path} {message}" if path else message)


# DeepSpeed's name for its config error, for code that catches it by that name.
DeepSpeedConfigError = ConfigError
