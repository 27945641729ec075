"""Transfer sources: kept as a re-export of :mod:`polarity.sources` (``spec``: the one parsed
source value; ``load``: loading, caching, applying), where sources now live in one place: one
trainer (:func:`polarity.sources.train_source`), one on-disk format (a source directory), one
parsed value (:class:`SourceSpec`).  New code imports from :mod:`polarity.sources`.
"""
from __future__ import annotations

from .sources.load import (CACHE_VERSION, PretrainConfig, Source, check_source_dir, clear_memo,
                           load_source, load_source_dir, polarity_template, pretrained_dir,
                           source_hash, source_key, transfer_weights)
from .sources.spec import (DATASET_NAMES, SOURCE_FORMAT, SourceSpec, TransferError, parse_source,
                           same_dataset)

__all__ = ["CACHE_VERSION", "PretrainConfig", "Source", "SourceSpec", "TransferError",
           "DATASET_NAMES", "SOURCE_FORMAT", "check_source_dir", "clear_memo", "load_source",
           "load_source_dir", "parse_source", "polarity_template", "pretrained_dir", "same_dataset",
           "source_hash", "source_key", "transfer_weights"]
