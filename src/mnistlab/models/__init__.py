"""Models. Importing this package registers every model with the registry."""
from . import classifiers  # noqa: F401
from .base import Model

__all__ = ["Model"]
