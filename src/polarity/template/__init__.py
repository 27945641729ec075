"""Polarity templates: for each constrained parameter, the sign each entry must keep.

:mod:`.core` holds the :class:`Template` and reads template files, :mod:`.select` says which
parameters are constrained, :mod:`.binding` matches entries to a model's tensors, and
:mod:`.fileformat` and :mod:`.safetensors_io` are the two on-disk layouts, and :mod:`.diagnostics`
measures a template (negative fraction, dead-leaning and silent units, agreement).  The
rationale and the byte layouts are in docs/templates.md.
"""
from .binding import Bound, _dtensor_class, _full, bind, canonical_name, iter_pairs, violating
from .controls import balance_signs, shuffle_signs
from .core import Template, TemplateFile, read_file
from .diagnostics import DEAD_THRESHOLD, SILENT_BELOW, Diagnostics, TensorDiagnostics, diagnose
from .errors import TemplateError
from .fileformat import (FORMAT_VERSION, MAGIC, MAGIC_1, _encode_entry, _free_list_decode,
                         _free_list_encode)
from .safetensors_io import ST_FORMAT, ST_VERSION
from .select import Patterns, _named_tensors, select_names

__all__ = ["DEAD_THRESHOLD", "FORMAT_VERSION", "MAGIC", "MAGIC_1", "SILENT_BELOW", "ST_FORMAT",
           "ST_VERSION", "Bound", "Diagnostics", "Patterns", "Template", "TemplateError",
           "TemplateFile", "TensorDiagnostics", "balance_signs", "bind", "canonical_name", "diagnose",
           "iter_pairs", "read_file", "select_names", "shuffle_signs", "violating"]
