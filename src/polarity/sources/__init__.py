"""Source networks as first-class objects: train one with a documented recipe, write it as a
verifiable directory (weights, 1-bit template, manifest), ship it, load it by name or path.

    polarity source train cifar10 --width 0.5 --out DIR
    polarity source list
    polarity source info cifar10-compact-w0.5
"""
from .directory import (SourceError, SourceNetwork, read_manifest, read_source_dir,
                        verify_source_dir, write_source_dir)
from .recipe import SourceRecipe, train_source
from .zoo import ZOO, resolve, shipped

__all__ = ["SourceError", "SourceNetwork", "SourceRecipe", "train_source", "write_source_dir",
           "read_source_dir", "read_manifest", "verify_source_dir", "resolve", "shipped", "ZOO"]
