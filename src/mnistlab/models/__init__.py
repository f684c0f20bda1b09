"""Models. Importing this package registers every model with the registry."""
from . import autoencoders, classifiers  # noqa: F401
from .base import Model

__all__ = ["Model"]
