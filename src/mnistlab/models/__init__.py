"""Models. Importing this package registers every model; it re-exports the registry's
functions, so ``from mnistlab.models import create_model`` always sees every model."""

from . import autoencoders, classifiers, coupled  # noqa: F401  (importing registers them)
from ._registry import ModelSpec, create_model, get_spec, list_models, register_model
from .base import Model

__all__ = ["Model", "ModelSpec", "create_model", "get_spec", "list_models", "register_model"]
