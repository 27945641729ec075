"""The Hugging Face Trainer callback on a tiny BERT-style model built from a config (no
download), its word embeddings tied to the output layer: after every optimizer step no
constrained entry breaks its sign, resets are logged to the log history, and a resumed run
matches an uninterrupted one."""
import logging
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from polarity import Template, TemplateError  # noqa: E402
from polarity.integrations.transformers import PolarityCallback  # noqa: E402


def _bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, tie_word_embeddings=True,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForMaskedLM(cfg)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n=32, length=12):
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 64, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class _Check(transformers.TrainerCallback):
    """Counts violations after each optimizer step (its hook is registered after the freezer's)."""

    def __init__(self, template):
        self.template, self.after_step = template, []

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kw):
        optimizer.optimizer.register_step_post_hook(
            lambda *a: self.after_step.append(sum(self.template.violations(model).values())))


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=0.05,
                num_train_epochs=1, logging_steps=1, report_to="none", use_cpu=True,
                save_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0)
    base.update(kw)
    return transformers.TrainingArguments(**base)


def test_tied_embeddings_are_constrained_once():
    model = _bert()
    sd = model.state_dict()
    assert sd["cls.predictions.decoder.weight"].data_ptr() == \
        sd["bert.embeddings.word_embeddings.weight"].data_ptr()
    t = Template.from_module(sd)  # lists both names of the tied matrix
    assert {"cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"} <= set(t)
    from polarity import Freezer
    names = [n for n, _ in Freezer(model, t, seed=0).named_parameters()]
    assert "bert.embeddings.word_embeddings.weight" in names
    assert "cls.predictions.decoder.weight" not in names and len(names) == len(set(names))
    flipped = dict(t.sign_tensors())
    flipped["cls.predictions.decoder.weight"] = -flipped["cls.predictions.decoder.weight"]
    with pytest.raises(TemplateError, match="tied parameter.*different signs"):
        Freezer(model, Template(flipped), seed=0)


def test_trainer_train_with_accumulation_keeps_signs_and_logs_resets(tmp_path):
    model = _bert()
    t = Template.random(model.state_dict(), seed=2)  # both tied names: they must agree
    t = Template({k: (v if k != "cls.predictions.decoder.weight"
                      else t["bert.embeddings.word_embeddings.weight"]) for k, v in t.items()})
    cb, check = PolarityCallback(t, seed=5), _Check(t)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, gradient_accumulation_steps=2),
                                   train_dataset=_Tokens(), callbacks=[cb, check])
    trainer.train()
    assert cb.freezer.steps == len(check.after_step) == 4  # 32 samples / (4 x 2)
    assert check.after_step == [0] * 4
    logged = [h["polarity/resets"] for h in trainer.state.log_history if "polarity/resets" in h]
    assert len(logged) == 4 and sum(logged) == int(cb.freezer.total_reset) > 0


def test_resumed_training_is_bit_identical(tmp_path):
    """Resumed mid-epoch (step 11 of 16) from a checkpoint of another run's directory (not under
    this run's output_dir): the freezer's state comes from the checkpoint actually resumed."""
    t = Template.from_init(_bert())
    full = _bert()
    transformers.Trainer(model=full, args=_args(tmp_path / "a", num_train_epochs=2),
                         train_dataset=_Tokens(), callbacks=[PolarityCallback(t, seed=5)]).train()
    args = _args(tmp_path / "b", num_train_epochs=2, save_strategy="steps", save_steps=11)
    transformers.Trainer(model=_bert(), args=args, train_dataset=_Tokens(),
                         callbacks=[PolarityCallback(t, seed=5)]).train()
    resumed, cb = _bert(), PolarityCallback(t, seed=5)
    trainer = transformers.Trainer(model=resumed, args=_args(tmp_path / "c", num_train_epochs=2),
                                   train_dataset=_Tokens(), callbacks=[cb])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*resuming")
        trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-11"))
    assert cb.freezer.steps == 16
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_restoring_callback_states_does_not_say_it_ignores_polaritys(tmp_path):
    """With restore_callback_states_from_checkpoint=True the Trainer warned 'Checkpoint included
    callbacks not included in current configuration. Ignoring. (polarity.Freezer[...])' although
    the callback reads that state; now it keeps quiet about polarity's key, and the resumed
    freezer still continues the checkpoint's stream."""
    t = Template.from_init(_bert())
    args = _args(tmp_path / "b", num_train_epochs=2, save_strategy="steps", save_steps=11)
    transformers.Trainer(model=_bert(), args=args, train_dataset=_Tokens(),
                         callbacks=[PolarityCallback(t, seed=5)]).train()
    cb = PolarityCallback(t, seed=5)
    trainer = transformers.Trainer(model=_bert(), train_dataset=_Tokens(), callbacks=[cb],
                                   args=_args(tmp_path / "c", num_train_epochs=2,
                                              restore_callback_states_from_checkpoint=True))
    log, seen = logging.getLogger("transformers.trainer"), _Messages()
    log.addHandler(seen)
    try:
        trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-11"))
    finally:
        log.removeHandler(seen)
    assert cb.freezer.steps == 16
    assert not [m for m in seen.messages if "Ignoring" in m], seen.messages


def test_training_twice_with_one_callback_continues_the_posrand_stream(tmp_path):
    """A second train() continues the freezer's steps (a restarted stream would repeat the
    first run's draws)."""
    model = _bert()
    t = Template.from_init(model)
    cb = PolarityCallback(t, seed=5)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path), train_dataset=_Tokens(),
                                   callbacks=[cb])
    trainer.train()
    first = cb.freezer
    assert first.steps == 8
    trainer.train()
    assert cb.freezer.steps == 16 and cb.freezer.seed == first.seed


def test_a_checkpoint_of_an_earlier_version_keeps_its_state_in_a_file(tmp_path):
    """Checkpoints written before the state rode in trainer_state.json have
    polarity_freezer.json beside them: read when the checkpoint is under output_dir; a resume
    with neither warns."""
    import json
    from types import SimpleNamespace
    from polarity.integrations.transformers import STATE_FILE
    cb = PolarityCallback(Template.from_init(_bert()), seed=5)
    saved = {"seed": 5, "steps": 8, "reset": "posRand", "eps": 1e-3}
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / STATE_FILE).write_text(json.dumps(saved))
    args = SimpleNamespace(resume_from_checkpoint=None, output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=8, stateful_callbacks={})
    assert cb._checkpoint_state(args, state) == saved
    state.stateful_callbacks[cb.state_key] = dict(saved, steps=7)   # the trainer state wins
    assert cb._checkpoint_state(args, state)["steps"] == 7
    with pytest.warns(UserWarning, match="resuming at step 9 from a checkpoint without"):
        assert cb._checkpoint_state(args, SimpleNamespace(global_step=9,
                                                          stateful_callbacks={})) is None
