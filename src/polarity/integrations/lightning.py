"""Freeze-SGD in a Lightning fit: ``PolarityCallback(template)`` in ``Trainer(callbacks=[...])``.

At fit start the callback makes the LightningModule comply with the template (``impose``, flip
by default), builds a :class:`~polarity.Freezer` and attaches it to every optimizer of the fit
through the optimizer's step post-hook.  So the reset runs exactly when a parameter update
happens: once per ``accumulate_grad_batches`` batches, after each of several optimizers, never
after a step that the AMP grad scaler skips.  The number of entries reset since the previous
batch is logged as ``polarity/resets`` (on steps where an update happened) to the trainer's
logger, and the freezer's state travels in Lightning checkpoints under a key of the template's
names (several callbacks, e.g. one per part of a model, keep their own), so a resumed fit draws
what an uninterrupted one would; a second fit with the same callback continues its stream.
Lightning's learning-rate and batch-size finders search in their ``on_fit_start``, which Lightning
runs before every other callback's: the callback moves itself ahead of them, so they search the
constrained model (and restore the freezer's state with the model's when they are done).
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BatchSizeFinder, LearningRateFinder

from ..template import Template
from ._attach import CallbackBase


class PolarityCallback(CallbackBase, pl.Callback):
    """Keep ``template``'s signs on the LightningModule after every optimizer step.

    ``reset``, ``eps`` and ``seed`` are the :class:`~polarity.Freezer`'s; ``impose`` is the method
    that makes the module comply before training (``"flip"`` keeps the magnitudes; ``None``
    leaves it as it is).  ``callback.freezer`` is the freezer once the fit has started."""

    def __init__(self, template: Template, *args: Any, **kwargs: Any) -> None:
        super().__init__(template, *args, **kwargs)   # CallbackBase: reset, eps, seed, ...

    @property
    def state_key(self) -> str:
        return self._generate_state_key(template=self._template_key())

    @property
    def _legacy_state_key(self) -> str:
        return type(self).__qualname__  # the one key of checkpoints written before state_key

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            _ahead_of_tuners(trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(pl_module, trainer.optimizers)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        resets = self._resets_since_log()
        if resets is not None:
            pl_module.log(self.log_name, resets.float(), on_step=True, on_epoch=False)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._stop()

    def state_dict(self) -> dict[str, Any]:
        return self._freezer_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._load_freezer_state(state_dict)


def _ahead_of_tuners(trainer: pl.Trainer) -> None:
    """Put the PolarityCallbacks just before the first tuner callback (Lightning puts those
    first; they train in their ``on_fit_start``), keeping every other order."""
    callbacks = list(trainer.callbacks)
    first = next((i for i, c in enumerate(callbacks)
                  if isinstance(c, (BatchSizeFinder, LearningRateFinder))), None)
    if first is None:
        return
    late = [c for c in callbacks[first:] if isinstance(c, PolarityCallback)]
    if late:
        rest = [c for c in callbacks[first:] if not isinstance(c, PolarityCallback)]
        trainer.callbacks = callbacks[:first] + late + rest


__all__ = ["PolarityCallback"]
