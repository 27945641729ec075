"""polarity: fix each weight's sign to a template and train with Freeze-SGD; transfer signs
instead of weights.  See README.md for a tour."""
from ._version import __version__
from .template import Template, TemplateError
from .freeze import Freezer, RESET_METHODS, impose, reset_, switch_fraction
from .reparam import reparametrize, unreparametrize

__all__ = ["Template", "TemplateError", "Freezer", "RESET_METHODS", "impose", "reset_",
           "switch_fraction", "reparametrize", "unreparametrize", "__version__"]
