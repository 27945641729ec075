"""Image reproduction (paper Figures 2, 3, C.3-C.6): polarity transfer against weight transfer.

Experiments ``fmnist``, ``cifar10`` and ``images`` (any dataset), six conditions (SPEC §5) and
the controls (frozen-shuffled, frozen-balanced, the oracle arms).  One
file per part of the method:

* ``presets.py``     hyper-parameters, the conditions, the presets
* ``protocol.py``    one (n, trial): the controlled comparison of every condition
* ``experiment.py``  validation, the grid of jobs, registration
* ``report.py``      the report, composed from :mod:`polarity.analysis.figures`
* ``dose.py``        experiment ``dose``: a ladder of sources against one RAND (dose-response)
* ``dose_report.py`` its report: paired benefit against what each source learned

The design (what the conditions share, what is recorded, the sources) is in ``docs/images.md``.
"""
from .experiment import (CIFAR10Experiment, FashionMNISTExperiment, ImageExperiment,
                         ImageFolderExperiment)
from .dose import DoseExperiment, DoseHparams
from .presets import (ALL_CONDITIONS, CIFAR_PAPER_N, CONDITIONS, CONTROLS, FMNIST_PAPER_N,
                      NEEDS_SOURCE, ORACLE_CONDITIONS, ORACLE_LABEL, REFERENCE, ImageHparams,
                      condition_label, make_presets, model_kwargs)
from .protocol import (HIST_BINS, HIST_HI, HIST_LO, get_oracle, get_source, load_data, run_trial,
                       source_agreement)

__all__ = ["CONDITIONS", "CONTROLS", "ORACLE_CONDITIONS", "ALL_CONDITIONS", "ORACLE_LABEL",
           "NEEDS_SOURCE", "get_oracle", "REFERENCE", "FMNIST_PAPER_N", "CIFAR_PAPER_N",
           "ImageHparams", "condition_label", "make_presets", "model_kwargs", "HIST_LO", "HIST_HI",
           "HIST_BINS", "get_source", "load_data", "run_trial", "source_agreement",
           "ImageExperiment", "FashionMNISTExperiment", "CIFAR10Experiment",
           "ImageFolderExperiment", "DoseExperiment", "DoseHparams"]
