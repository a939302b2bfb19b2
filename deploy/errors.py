"""The project's error types. The CLI turns them into one line and an exit code; library code never exits."""


class UserError(Exception):
    """Bad usage or bad input: a missing file, a wrong model, an unreadable checkpoint."""

    exit_code = 2


class MissingDependencyError(UserError):
    """An optional package (tensorrt, CUDA bindings, OpenCV) is needed for the requested operation."""

    def __init__(self, package, purpose, hint=None):
        message = "{} is required to {}".format(package, purpose)
        if hint:
            message += "; " + hint
        super().__init__(message)
        self.package = package


class CheckFailedError(Exception):
    """A verification ran and its result is out of bounds (parity, accuracy drop)."""

    exit_code = 1
