"""Reading users' images: one digit or a written number, through one preprocessing path.

- ``images``: the image pipeline (grey, ink, lines and specks removed, components, the
  MNIST-style 28x28).
- ``reader``: digits and numbers read by a trained classifier, with how sure it is.
- ``photos``: the generator of photo sets that test the reader (paper, pens, light, numbers).
"""

from .images import load_grey, load_image, preprocess
from .reader import LOW_CONFIDENCE, read_digit, read_number

__all__ = ["LOW_CONFIDENCE", "load_grey", "load_image", "preprocess", "read_digit", "read_number"]
