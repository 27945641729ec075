"""Freeze-SGD in a Hugging Face ``Trainer``: ``callbacks=[PolarityCallback(template)]``.

At the start of training the callback makes the model comply with the template (``impose``,
flip by default), builds a :class:`~polarity.Freezer` and attaches it to the torch optimizer
inside the Trainer's (accelerate's) wrapper through its step post-hook: the reset runs once per
update, whatever ``gradient_accumulation_steps`` is, and not after a step the fp16 grad scaler
skips.  Each time the Trainer logs, the entries reset since its previous log are added to that
log-history entry as ``polarity/resets``.  The freezer's state is written beside every checkpoint
(``polarity_freezer.json``) and read back when training resumes from one, so a resumed run draws
what an uninterrupted one would.
"""
from __future__ import annotations

import json
import os
import warnings

import transformers

from ..freeze import Freezer, impose as impose_
from ..template import Template
from ._attach import CallbackSettings, attach_all

STATE_FILE = "polarity_freezer.json"


class PolarityCallback(CallbackSettings, transformers.TrainerCallback):
    """Keep ``template``'s signs on the Trainer's model after every optimizer step.

    ``reset``, ``eps`` and ``seed`` are the :class:`~polarity.Freezer`'s; ``impose`` makes the
    model comply before training (``"flip"`` keeps the magnitudes; ``None`` leaves it).
    ``callback.freezer`` is the freezer once training has begun."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.impose is not None:
            impose_(model, self.template, self.impose)
        self.freezer = Freezer(model, self.template, self.reset, self.eps, self.seed)
        if state.global_step > 0:  # resumed from a checkpoint
            self._restore(args, state)
        self._seen = (self.freezer.steps, 0)
        self._handles = attach_all(self.freezer, [optimizer])

    def _restore(self, args, state) -> None:
        where = [d for d in (args.resume_from_checkpoint,
                             os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
                 if isinstance(d, str) and os.path.isfile(os.path.join(d, STATE_FILE))]
        if not where:
            warnings.warn(f"resuming at step {state.global_step} without {STATE_FILE}: the "
                          "freezer starts a fresh posRand stream (the signs are kept all the same)",
                          stacklevel=3)
            return
        with open(os.path.join(where[0], STATE_FILE)) as f:
            self.freezer.load_state_dict(json.load(f))

    def on_log(self, args, state, control, logs=None, **kwargs):
        f = self.freezer
        if f is None or f.steps == self._seen[0]:
            return
        resets = int(f.total_reset - self._seen[1])
        self._seen = (f.steps, f.total_reset)
        if logs is not None:
            logs[self.log_name] = resets
        last = state.log_history[-1] if state.log_history else None
        if isinstance(last, dict) and last.get("step") == state.global_step:
            last[self.log_name] = resets

    def on_save(self, args, state, control, **kwargs):
        if self.freezer is not None and state.is_world_process_zero:
            d = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(d):
                with open(os.path.join(d, STATE_FILE), "w") as f:
                    json.dump(self.freezer.state_dict(), f)

    def on_train_end(self, args, state, control, **kwargs):
        for h in self._handles:
            h.remove()
        self._handles = []


__all__ = ["PolarityCallback", "STATE_FILE"]
