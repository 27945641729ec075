"""Freeze-SGD in a Hugging Face ``Trainer``: ``callbacks=[PolarityCallback(template)]``.

At the start of training the callback makes the model comply with the template (``impose``,
flip by default), builds a :class:`~polarity.Freezer` and attaches it to the torch optimizer
inside the Trainer's (accelerate's) wrapper through its step post-hook: the reset runs once per
update, whatever ``gradient_accumulation_steps`` is, and not after a step the fp16 grad scaler
skips.  Each time the Trainer logs, the entries reset since its previous log are added to that
log-history entry as ``polarity/resets``.  The freezer's state rides in the Trainer's own state
(``trainer_state.json`` of every checkpoint, under ``stateful_callbacks``), which the Trainer reads
from the checkpoint it resumes, wherever that is: a resumed run draws what an uninterrupted one
would.  A second ``train()`` with the same callback continues the freezer's stream.
"""
from __future__ import annotations

import json
import logging
import os
import warnings

import transformers

from ._attach import CallbackBase

STATE_FILE = "polarity_freezer.json"  # where checkpoints written before the state key kept it
STATE_PREFIX = "polarity.Freezer["    # every PolarityCallback's key in TrainerState.stateful_callbacks
_IGNORING = "Checkpoint included callbacks not included in current configuration. Ignoring. ("


class _OwnStateIsNotIgnored(logging.Filter):
    """With ``restore_callback_states_from_checkpoint=True`` the Trainer warns that it ignores every
    stored callback state whose key is not a callback class name, polarity's among them, although
    the callback reads that state itself (``on_train_begin``): leave polarity's keys out of that
    warning, and drop it when they were all it named."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not (msg.startswith(_IGNORING) and msg.endswith(")")):
            return True
        names = msg[len(_IGNORING):-1].split(", ")
        others = [n for n in names if not n.startswith(STATE_PREFIX)]
        if len(others) == len(names):
            return True
        record.msg, record.args = f"{_IGNORING}{', '.join(others)})", ()
        return bool(others)


_TRAINER_LOG = logging.getLogger("transformers.trainer")
if not any(isinstance(f, _OwnStateIsNotIgnored) for f in _TRAINER_LOG.filters):
    _TRAINER_LOG.addFilter(_OwnStateIsNotIgnored())


class PolarityCallback(CallbackBase, transformers.TrainerCallback):
    """Keep ``template``'s signs on the Trainer's model after every optimizer step.

    ``reset``, ``eps`` and ``seed`` are the :class:`~polarity.Freezer`'s; ``impose`` makes the
    model comply before training (``"flip"`` keeps the magnitudes; ``None`` leaves it).
    ``callback.freezer`` is the freezer once training has begun."""

    @property
    def state_key(self) -> str:
        """This callback's key in ``TrainerState.stateful_callbacks`` (not a class name, so the
        Trainer's own callback restore leaves it alone)."""
        return f"{STATE_PREFIX}{self._template_key()}]"

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step > 0:  # resumed from a checkpoint: its state wins
            self._state = self._checkpoint_state(args, state)
        self._start(model, [optimizer])
        self._record(state)

    def _checkpoint_state(self, args, state) -> dict | None:
        saved = state.stateful_callbacks.get(self.state_key)
        if isinstance(saved, dict):
            return saved
        for d in (args.resume_from_checkpoint,
                  os.path.join(args.output_dir, f"checkpoint-{state.global_step}")):
            if isinstance(d, str) and os.path.isfile(os.path.join(d, STATE_FILE)):
                with open(os.path.join(d, STATE_FILE)) as f:
                    return json.load(f)
        warnings.warn(f"resuming at step {state.global_step} from a checkpoint without this "
                      "callback's freezer state: the freezer starts a fresh posRand stream (the "
                      "signs are kept all the same)", stacklevel=3)
        return None

    def _record(self, state) -> None:
        """Put the freezer's state where the Trainer's next checkpoint writes it."""
        state.stateful_callbacks[self.state_key] = self.freezer.state_dict()

    def on_step_end(self, args, state, control, **kwargs):
        if self.freezer is not None:
            self._record(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        resets = self._resets_since_log()
        if resets is None:
            return
        resets = int(resets)
        if logs is not None:
            logs[self.log_name] = resets
        last = state.log_history[-1] if state.log_history else None
        if isinstance(last, dict) and last.get("step") == state.global_step:
            last[self.log_name] = resets

    def on_train_end(self, args, state, control, **kwargs):
        self._stop()


__all__ = ["PolarityCallback", "STATE_FILE"]
