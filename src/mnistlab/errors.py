"""Errors a user can cause and fix. The CLI prints them on one line and exits non-zero."""


class MnistlabError(Exception):
    """Base class: anything raised as this is the user's to fix, not a bug.

    The line is ``"{subject}: {detail}"`` when it names what is wrong (a file, an image), else
    the detail alone. ``reason``, when set, says which kind of failure it is for code that must
    tell them apart (never the text)."""

    def __init__(self, detail: str = "", *, subject: object = None, reason: str = ""):
        super().__init__(f"{subject}: {detail}" if subject is not None else detail)
        self.detail, self.subject, self.reason = detail, subject, reason


class DataError(MnistlabError):
    """A dataset could not be found, read or verified."""


class ConfigError(MnistlabError):
    """A config key or value is unknown or invalid."""


class RunError(MnistlabError):
    """A run folder is missing, incomplete or would be overwritten."""


class ImageError(MnistlabError):
    """A user image could not be read or holds no ink."""


class DivergedError(MnistlabError):
    """Training produced a non-finite loss or weights (a learning rate too high, say)."""
