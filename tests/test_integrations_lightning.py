"""The Lightning callback: a real fit, with gradient accumulation, several optimizers, AMP and a
checkpoint resume; after every optimizer step the constrained parameters break no sign."""
import warnings

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from polarity import Template  # noqa: E402
from polarity.integrations.lightning import PolarityCallback  # noqa: E402


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :2].sum(1) > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


class Net(pl.LightningModule):
    """A tiny classifier that checks, after each optimizer step, the template's violations."""

    def __init__(self, template=None, lr=0.5):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
        self.template, self.lr, self.after_step = template, lr, []

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def on_fit_start(self):  # runs after the callbacks' on_fit_start: this hook runs after theirs
        for opt in self.trainer.optimizers:
            opt.register_step_post_hook(lambda *a: self.after_step.append(
                sum(self.template.violations(self).values())))


class Metrics(pl.loggers.Logger):
    name, version = "memory", 0

    def __init__(self):
        super().__init__()
        self.rows = []

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, *args, **kwargs):
        pass


def _trainer(logger=None, **kw):
    return pl.Trainer(accelerator="cpu", devices=1, logger=logger or False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, log_every_n_steps=1, **kw)


def _template():
    return Template.random(Net().net, seed=1).rename(lambda k: "net." + k)


def test_fit_with_gradient_accumulation_resets_once_per_update_and_logs_them():
    t = _template()
    model, cb, logger = Net(t), PolarityCallback(t, seed=3), Metrics()
    _trainer(logger, max_epochs=2, accumulate_grad_batches=2, callbacks=[cb]).fit(model, _data())
    assert cb.freezer.steps == len(model.after_step) == 8  # 2 epochs x 8 batches / 2
    assert model.after_step == [0] * 8
    logged = [m["polarity/resets"] for _, m in logger.rows if "polarity/resets" in m]
    assert len(logged) == 8 and sum(logged) == int(cb.freezer.total_reset) > 0


def test_amp_bf16_mixed_fit_keeps_the_signs():
    t = _template()
    model, cb = Net(t), PolarityCallback(t, seed=3)
    _trainer(max_epochs=1, precision="bf16-mixed", callbacks=[cb]).fit(model, _data())
    assert model.after_step == [0] * 8 and int(cb.freezer.total_reset) > 0


class TwoOptimizers(Net):
    """Manual optimization with one optimizer per layer (as a GAN has two)."""

    def __init__(self, template):
        super().__init__(template)
        self.automatic_optimization = False

    def training_step(self, batch, _):
        x, y = batch
        for opt in self.optimizers():
            opt.zero_grad()
            self.manual_backward(nn.functional.cross_entropy(self.net(x), y))
            opt.step()

    def configure_optimizers(self):
        return [torch.optim.SGD(self.net[0].parameters(), lr=self.lr),
                torch.optim.SGD(self.net[2].parameters(), lr=self.lr)]


def test_several_optimizers_each_step_is_followed_by_a_reset():
    t = _template()
    model, cb = TwoOptimizers(t), PolarityCallback(t, seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="constrained parameters")
        _trainer(max_epochs=1, callbacks=[cb]).fit(model, _data())
    assert cb.freezer.steps == 16 and model.after_step == [0] * 16
    assert int(cb.freezer.total_reset) > 0


def test_resumed_fit_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    t = _template()
    full = Net(t)
    _trainer(max_epochs=2, callbacks=[PolarityCallback(t, seed=3)]).fit(full, _data())
    first = Net(t)
    trainer = _trainer(max_epochs=1, callbacks=[PolarityCallback(t, seed=3)])
    trainer.fit(first, _data())
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    # a checkpoint written before the callback had a state_key: its one key was the class name
    ckpt = torch.load(tmp_path / "half.ckpt", weights_only=False)
    ckpt["callbacks"] = {"PolarityCallback": v for v in ckpt["callbacks"].values()}
    torch.save(ckpt, tmp_path / "old.ckpt")
    resumed, cb = Net(t), PolarityCallback(t, seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint")
        _trainer(max_epochs=2, callbacks=[cb]).fit(resumed, _data(), ckpt_path=tmp_path / "old.ckpt")
    assert cb.freezer.steps == 16
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


class _Seen(Net):
    """Counts the template's violations of the model each training step computes its loss on."""

    def training_step(self, batch, i):
        self.seen = getattr(self, "seen", []) + [sum(self.template.violations(self).values())]
        return super().training_step(batch, i)


def test_the_lr_finder_searches_the_constrained_model():
    from lightning.pytorch.tuner import Tuner
    t = _template()
    model, cb = _Seen(t), PolarityCallback(t, seed=3)
    trainer = _trainer(max_epochs=1, callbacks=[cb])
    Tuner(trainer).lr_find(model, _data(), min_lr=1e-3, max_lr=1.0, num_training=6,
                           early_stop_threshold=None)
    assert model.seen == [0] * 6                       # every loss of the search
    assert sum(t.violations(model).values()) == 0      # right after the search
    assert cb.freezer.steps == 0                       # the search's draws are not the fit's
    trainer = _trainer(max_epochs=1, callbacks=[cb])
    trainer.fit(model, _data())
    assert cb.freezer.steps == 8 and sum(t.violations(model).values()) == 0


def test_two_callbacks_on_two_parts_save_and_resume(tmp_path):
    """Two parts of one model with their own resets: each callback keeps its own state in the
    checkpoint (state_key), and the resumed fit equals an uninterrupted one."""
    t = _template()

    def callbacks():
        return [PolarityCallback(t.select(include="net.0.*"), reset="posRand", seed=3),
                PolarityCallback(t.select(include="net.2.*"), reset="posCon", seed=4)]

    full = Net(t)
    _trainer(max_epochs=2, callbacks=callbacks()).fit(full, _data())
    first = Net(t)
    trainer = _trainer(max_epochs=1, callbacks=callbacks())
    trainer.fit(first, _data())
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    keys = set(torch.load(tmp_path / "half.ckpt", weights_only=False)["callbacks"])
    assert len([k for k in keys if k.startswith("PolarityCallback")]) == 2
    resumed, cbs = Net(t), callbacks()
    _trainer(max_epochs=2, callbacks=cbs).fit(resumed, _data(), ckpt_path=tmp_path / "half.ckpt")
    assert [cb.freezer.steps for cb in cbs] == [16, 16]
    assert [cb.freezer.reset for cb in cbs] == ["posRand", "posCon"]
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_fitting_twice_with_one_callback_continues_the_posrand_stream():
    t = _template()
    model, cb = Net(t), PolarityCallback(t, seed=3)
    _trainer(max_epochs=1, callbacks=[cb]).fit(model, _data())
    assert cb.freezer.steps == 8
    _trainer(max_epochs=1, callbacks=[cb]).fit(model, _data())
    assert cb.freezer.steps == 16


class _Batches(_Seen):
    """Its own data, in batches of ``batch_size`` (what the batch-size finder scales)."""

    def __init__(self, template):
        super().__init__(template)
        self.batch_size = 4

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_data().dataset, batch_size=self.batch_size)


def test_the_batch_size_finder_searches_the_constrained_model():
    from lightning.pytorch.tuner import Tuner
    t = _template()
    model, cb = _Batches(t), PolarityCallback(t, seed=3)
    trainer = _trainer(max_epochs=1, callbacks=[cb])
    Tuner(trainer).scale_batch_size(model, mode="power", steps_per_trial=2, init_val=4,
                                    max_trials=2)
    assert len(model.seen) >= 4 and model.seen == [0] * len(model.seen)
    assert sum(t.violations(model).values()) == 0 and cb.freezer.steps == 0
