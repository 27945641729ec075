"""polarity: fix each weight's sign to a template and train with Freeze-SGD; transfer signs
instead of weights.  See README.md for a tour."""
from ._version import __version__

_LAZY = {"Template": "template", "TemplateError": "template", "Freezer": "freeze", "RESET_METHODS": "freeze",
         "impose": "freeze", "reset_": "freeze", "switch_fraction": "freeze", "reparametrize": "reparam",
         "unreparametrize": "reparam"}


def __getattr__(name):  # PEP 562: `import polarity` stays cheap (the CLI starts without torch)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'polarity' has no attribute {name!r}")


__all__ = ["Template", "TemplateError", "Freezer", "RESET_METHODS", "impose", "reset_",
           "switch_fraction", "reparametrize", "unreparametrize", "__version__"]
