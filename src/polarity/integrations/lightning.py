"""Freeze-SGD in a Lightning fit: ``PolarityCallback(template)`` in ``Trainer(callbacks=[...])``.

At fit start the callback makes the LightningModule comply with the template (``impose``, flip
by default), builds a :class:`~polarity.Freezer` and attaches it to every optimizer of the fit
through the optimizer's step post-hook.  So the reset runs exactly when a parameter update
happens: once per ``accumulate_grad_batches`` batches, after each of several optimizers, never
after a step that the AMP grad scaler skips.  The number of entries reset since the previous
batch is logged as ``polarity/resets`` (on steps where an update happened) to the trainer's
logger, and the freezer's state travels in Lightning checkpoints, so a resumed fit draws what an
uninterrupted one would.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from ..freeze import Freezer, impose as impose_
from ..template import Template
from ._attach import CallbackSettings, attach_all


class PolarityCallback(CallbackSettings, pl.Callback):
    """Keep ``template``'s signs on the LightningModule after every optimizer step.

    ``reset``, ``eps`` and ``seed`` are the :class:`~polarity.Freezer`'s; ``impose`` is the method
    that makes the module comply before training (``"flip"`` keeps the magnitudes; ``None``
    leaves it as it is).  ``callback.freezer`` is the freezer once the fit has started."""

    def __init__(self, template: Template, *args: Any, **kwargs: Any) -> None:
        super().__init__(template, *args, **kwargs)   # CallbackSettings: reset, eps, seed, ...
        self._state: dict | None = None  # restored from a checkpoint before the freezer exists

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.impose is not None:
            impose_(pl_module, self.template, self.impose)
        self.freezer = Freezer(pl_module, self.template, self.reset, self.eps, self.seed)
        if self._state is not None:
            self.freezer.load_state_dict(self._state)
        self._seen = (self.freezer.steps, 0)
        self._handles = attach_all(self.freezer, trainer.optimizers)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        f = self.freezer
        if f is None or f.steps == self._seen[0]:
            return  # no optimizer step in this batch (gradient accumulation)
        resets = f.total_reset - self._seen[1]
        self._seen = (f.steps, f.total_reset)
        pl_module.log(self.log_name, resets.float(), on_step=True, on_epoch=False)

    def on_fit_end(self, trainer, pl_module) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def state_dict(self) -> dict[str, Any]:
        return self.freezer.state_dict() if self.freezer is not None else dict(self._state or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.freezer is not None:
            self.freezer.load_state_dict(state_dict)
        else:
            self._state = dict(state_dict)


__all__ = ["PolarityCallback"]
