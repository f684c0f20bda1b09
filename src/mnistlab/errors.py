"""Errors a user can cause and fix. The CLI prints them on one line and exits non-zero."""


class MnistlabError(Exception):
    """Base class: anything raised as this is the user's to fix, not a bug."""


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
