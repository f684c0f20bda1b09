"""Why a digit was read as it was: attribution maps, and how faithful they are.

- ``maps``: ``explain(model, images, method)`` through Captum, one call per method.
- ``faithfulness``: deletion, insertion and randomisation checks of a method.
"""

from .maps import METHODS, explain

__all__ = ["METHODS", "explain"]
