"""``xor5d``: the XOR-5D simulation of the paper (Figures 1, 4 and C.1; SPEC §4, §6).

One file per part of the method (protocol and design: docs/xor5d.md):

* ``conditions.py``  hyper-parameters, presets, conditions; the shared start (initialisation,
  sufficient template, batch order)
* ``plan.py``        which networks train together (jobs) and the inputs of one job (``XorJob``)
* ``trainer.py``     the batched trainer: G x C networks in one program, fused or torch path
* ``kernels.py``     its numba kernels (step, validation, reset)
* ``reference.py``   one network trained alone: what the batched trainer must equal
* ``experiment.py``  the registered ``xor5d`` experiment
* ``report.py``      figures and tables from the store
"""
from ...seeds import network_reset_seed
from .conditions import (BASE_CONDITIONS, FIG1_N, FIG4_WIDTHS, PRESETS, Condition, XorHparams,
                         epoch_permutations, initial_state, parse_condition, sufficient_output_signs)
from .experiment import Xor5D
from .plan import prepare_job, width_buckets
from .reference import train_single
from .trainer import BatchedResult, XorJob, train_batched

__all__ = ["BASE_CONDITIONS", "FIG1_N", "FIG4_WIDTHS", "PRESETS", "Condition", "XorHparams",
           "epoch_permutations", "initial_state", "parse_condition", "sufficient_output_signs",
           "prepare_job", "width_buckets", "XorJob", "train_batched", "BatchedResult", "train_single", "Xor5D",
           "network_reset_seed"]
