"""Thin trainer callbacks over :class:`polarity.Freezer` (never a second implementation).

* ``lightning.py``     ``PolarityCallback`` for ``lightning.pytorch``
  (``pip install polarity[lightning]``)
* ``transformers.py``  ``PolarityCallback`` for the Hugging Face ``Trainer``
  (``pip install polarity[transformers]``)

Each imports its trainer only when imported itself; docs/integrations.md shows both.
"""
