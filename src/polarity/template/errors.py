"""The one error every part of the template package raises."""


class TemplateError(ValueError):
    """A template that does not fit a model, a bad file, or bad values."""
