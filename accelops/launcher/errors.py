"""The one error type of the launcher's planning layer."""


class LaunchError(ValueError):
    """Bad launcher input (hostfile, resource filter, environment file, flags).

    The message names what is wrong and where (file and line, flag, host, slot), so the CLI prints it
    as is, without a traceback, and exits with status 2.
    """
