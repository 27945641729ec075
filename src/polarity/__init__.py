"""polarity: fix each weight's sign to a template and train with Freeze-SGD; transfer signs
instead of weights.  See README.md for a tour."""
__version__ = "0.1.0"

from .template import Template, TemplateError  # noqa: E402
from .freeze import Freezer, RESET_METHODS, impose, reset_, switch_fraction  # noqa: E402
from .reparam import reparametrize, unreparametrize  # noqa: E402

__all__ = ["Template", "TemplateError", "Freezer", "RESET_METHODS", "impose", "reset_",
           "switch_fraction", "reparametrize", "unreparametrize", "__version__"]
