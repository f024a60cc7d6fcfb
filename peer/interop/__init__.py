"""Plaintext interop (being split into one module per format)."""

from .plan import *  # noqa: F403
from .plan import __all__ as __all__
