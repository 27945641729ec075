"""Source networks as first-class objects, in one place: train one with a documented recipe
(:mod:`.recipe`), write it as a verifiable directory (weights, 1-bit template, manifest;
:mod:`.directory`), ship it (:mod:`.zoo`), name it with a source string parsed once
(:mod:`.spec`), and load it for a target network (:mod:`.load`; ``pretrained:<dataset>`` sources
are trained by the same recipe into a cached source directory).

    polarity source train cifar10 --width 0.5 --out DIR
    polarity source list
    polarity source info cifar10-compact-w0.5-s4 --verify
"""
from .directory import (SourceError, SourceNetwork, read_manifest, read_source_dir,
                        verify_source_dir, write_source_dir)
from .load import (PretrainConfig, Source, check_source_dir, clear_memo, load_source,
                   polarity_template, transfer_weights)
from .recipe import SourceRecipe, init_agreement, train_source
from .spec import SourceSpec, TransferError, parse_source, same_dataset
from .zoo import ZOO, resolve, shipped

__all__ = ["SourceError", "SourceNetwork", "SourceRecipe", "train_source", "write_source_dir",
           "read_source_dir", "read_manifest", "verify_source_dir", "resolve", "shipped", "ZOO",
           "init_agreement", "Source", "SourceSpec", "TransferError", "PretrainConfig",
           "parse_source", "same_dataset", "load_source", "check_source_dir", "clear_memo",
           "polarity_template", "transfer_weights"]
