"""A user's own image folder through the image protocol (issue 22 item 4): the layout checked
(train/ with test/ or val/, the same classes), sample and validation sizes checked against the
data before any run directory exists and, where the user set none, fitted to it; cut-offs
relative to chance; the report states the validation size, the class count and chance."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from polarity import engine
from polarity.data.images import (DatasetCorruptError, DatasetNotFoundError, folder_layout,
                                  load_dataset, split_sizes)
from polarity.data.subsets import sizes
from polarity.experiments import ExperimentError, get
from polarity.experiments.images.presets import (CHANCE_FRACTIONS, chance_cutoff,
                                                 fit_sample_sizes, fit_to_data)

from _cli import _cli, _one_line_error

SOURCE = "cifar10-compact-w0.5"  # shipped: loads in a moment, width 0.5 at 32px


def _folder(root: Path, train: int = 10, held: int = 10, classes=("a", "b", "c"),
            held_split: str = "val", held_classes=None) -> Path:
    """``root/train/<class>/`` and ``root/<held_split>/<class>/``: 8x8 class-coloured PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count, names in (("train", train, classes),
                                (held_split, held, held_classes or classes)):
        for name in names:
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            k = classes.index(name) % 3 if name in classes else 0
            for i in range(count):
                img = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
                img[..., k] += 150
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLARITY_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- the layout

@pytest.mark.parametrize("held_split", ["val", "test"])
def test_train_with_val_or_test_is_a_dataset(tmp_path, cache, held_split):
    root = _folder(tmp_path / "mine", train=4, held=2, held_split=held_split)
    layout = folder_layout(root)
    assert layout.val_split == held_split and layout.classes == ("a", "b", "c")
    assert split_sizes(f"folder:{root}") == layout.sizes
    assert (layout.sizes.train, layout.sizes.val, layout.sizes.num_classes) == (12, 6, 3)
    data = load_dataset(f"folder:{root}")
    assert len(data.train_y) == 12 and len(data.test_y) == 6 and data.num_classes == 3
    assert data.test_y.tolist() == [0, 1, 2] * 2  # class interleaved, as the training split


def test_test_split_wins_over_val(tmp_path, cache):
    root = _folder(tmp_path / "mine", train=4, held=2, held_split="test")
    _folder(root, train=4, held=3, held_split="val")
    assert folder_layout(root).val_split == "test"
    assert len(load_dataset(f"folder:{root}").test_y) == 6


def test_a_listing_follows_files_added_and_removed(tmp_path):
    """folder_layout keeps a listing while its folders are unchanged, and lists again after."""
    root = _folder(tmp_path / "mine", train=4, held=2)
    assert folder_layout(root) is folder_layout(root)
    (root / "train" / "a" / "000.png").rename(root / "train" / "a" / "100.png")
    assert folder_layout(root).files["train"]["a"][-1].name == "100.png"
    _folder(root, train=6, held=2)  # two more images per training class
    assert folder_layout(root).sizes.train == 19
    (root / "val" / "c" / "001.png").unlink()
    assert folder_layout(root).sizes.val == 5
    (root / "val" / "d").mkdir()
    with pytest.raises(DatasetCorruptError, match="only in val/: d"):
        folder_layout(root)


def test_layout_errors_name_what_was_looked_for(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        folder_layout(tmp_path / "nothing")
    (tmp_path / "no-train" / "val" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="has no train/ folder"):
        folder_layout(tmp_path / "no-train")
    (tmp_path / "no-val" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="neither test/ nor val/"):
        folder_layout(tmp_path / "no-val")
    root = _folder(tmp_path / "apart", train=2, held=2, held_classes=("a", "b", "d"))
    with pytest.raises(DatasetCorruptError, match=r"only in train/: c; only in val/: d"):
        folder_layout(root)
    with pytest.raises(DatasetCorruptError, match="at least two"):
        folder_layout(_folder(tmp_path / "one", train=2, held=2, classes=("a",)))
    root = _folder(tmp_path / "empty", train=2, held=2)
    for f in (root / "val" / "b").iterdir():
        f.unlink()
    with pytest.raises(DatasetCorruptError, match=r"no images in val/b/"):
        folder_layout(root)


def test_named_datasets_and_subsets_are_counted_without_loading():
    assert (split_sizes("fmnist").train, split_sizes("fmnist").val) == (60000, 10000)
    v = sizes("cifar10:vehicles")
    assert (v.train, v.val, v.classes) == (20000, 4000, ("airplane", "automobile", "ship", "truck"))
    assert sizes("fmnist:classes=0,1").train == 12000
    assert split_sizes("mnist") is None


# ----------------------------------------------------------------------------- the fitting rules

@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=6, unique=True), st.integers(1, 3000))
def test_fitted_sample_sizes_lie_within_the_pool(ns, pool):
    ns = tuple(sorted(ns))
    fit = fit_sample_sizes(ns, pool)
    assert fit and all(1 <= n <= pool for n in fit) and list(fit) == sorted(set(fit))
    if max(ns) <= pool:
        assert fit == ns  # a preset that fits is left as it is (its spec hash too)
    else:
        assert pool in fit and {n for n in ns if n < pool} <= set(fit)


@given(st.integers(2, 1000))
def test_chance_cutoffs_lie_between_chance_and_one(k):
    cuts = [chance_cutoff(k, f) for f in CHANCE_FRACTIONS]
    assert all(1 / k < c < 1 for c in cuts) and cuts == sorted(set(cuts))


def test_chance_cutoff_values():
    assert (chance_cutoff(2), chance_cutoff(3), chance_cutoff(10)) == (0.75, 0.67, 0.55)


def _resolve(exp="images", preset=None, sets=(), **fields):
    return engine.resolve(get(exp), preset, list(sets), fields=fields).hp


def test_the_default_preset_fits_a_small_folder(tmp_path):
    """The issue's folder: 3 classes of 30 + 30 images, the default preset, nothing set."""
    root = _folder(tmp_path / "mine", train=30, held=30)
    hp = _resolve(dataset=f"folder:{root}", source=SOURCE)
    preset = get("images").presets["quick"]
    assert max(preset.sample_sizes) > 90 and preset.val_size > 90  # the preset alone fails
    assert hp.sample_sizes == (22, 45, 90) and hp.val_size == 90
    assert hp.cutoff == 0.67 and hp.cutoffs == tuple(chance_cutoff(3, f) for f in CHANCE_FRACTIONS)
    shown = _resolve(dataset=f"folder:{root}", source=SOURCE, sets=["trials=2"])
    assert shown.sample_sizes == hp.sample_sizes  # another field set: still fitted


def test_given_fields_are_kept(tmp_path):
    root = _folder(tmp_path / "mine", train=30, held=30)
    hp = _resolve(dataset=f"folder:{root}", source=SOURCE,
                  sets=["sample_sizes=10,20", "val_size=30", "cutoff=0.9", "cutoffs=0.8"])
    assert (hp.sample_sizes, hp.val_size, hp.cutoff, hp.cutoffs) == ((10, 20), 30, 0.9, (0.8,))


def test_a_config_file_gives_fields_as_set_does(tmp_path):
    """A config file's [hparams] are given fields too; the fitted spec is the --set command's."""
    root = _folder(tmp_path / "mine", train=30, held=30)
    exp, fields = get("images"), {"dataset": f"folder:{root}", "source": SOURCE}
    kept = engine.resolve(exp, None, [], fields=fields, config={"sample_sizes": [10, 20]})
    assert kept.hp.sample_sizes == (10, 20) and kept.hp.cutoff == 0.67
    fitted = engine.resolve(exp, None, [], fields=fields, config={"trials": 2})
    assert fitted.hash == engine.resolve(exp, None, ["trials=2"], fields=fields).hash
    assert fitted.hp.sample_sizes == (22, 45, 90)


def test_presets_of_the_named_datasets_are_unchanged():
    """Nothing is fitted where everything fits: the shipped presets keep their spec hashes."""
    for name in ("fmnist", "cifar10"):
        for preset, hp in get(name).presets.items():
            assert fit_to_data(hp, frozenset()) is hp, (name, preset)
    control = get("images").presets["transfer-control"]
    assert fit_to_data(control, frozenset()) is control


def test_a_paper_sized_grid_on_a_subset_is_fitted():
    hp = _resolve(dataset="cifar10:vehicles", preset="paper")
    assert hp.sample_sizes == (100, 250, 500, 1000, 2500, 5000, 10000, 20000)
    assert hp.cutoff == get("images").presets["paper"].cutoff  # a named dataset's own cut-off


def test_sizes_set_beyond_the_data_are_refused_with_the_fix(tmp_path):
    root = _folder(tmp_path / "mine", train=30, held=30)
    with pytest.raises(ExperimentError, match=r"sample_sizes 100, 400 exceed the 90 training images "
                                              r"of folder:\S+ \(3 classes\): --set sample_sizes=50,90"):
        _resolve(dataset=f"folder:{root}", source=SOURCE, sets=["sample_sizes=50,100,400"])
    assert _resolve(dataset=f"folder:{root}", source=SOURCE,
                    sets=["sample_sizes=50,90"]).sample_sizes == (50, 90)  # the fix works
    with pytest.raises(ExperimentError, match=r"val_size=100 exceeds the 90 validation images.*"
                                              r"--set val_size=90"):
        _resolve(dataset=f"folder:{root}", source=SOURCE, sets=["val_size=100"])
    with pytest.raises(ExperimentError, match="60000 exceeds the 50000 training images"):
        _resolve("cifar10", sets=["sample_sizes=60000"])


def test_a_bad_folder_is_refused_by_validation(tmp_path):
    root = _folder(tmp_path / "apart", train=2, held=2, held_classes=("a", "b", "d"))
    with pytest.raises(ExperimentError, match="only in train/: c"):
        _resolve(dataset=f"folder:{root}", source=SOURCE)
    with pytest.raises(ExperimentError, match="neither test/ nor val/"):
        (tmp_path / "no-val" / "train" / "a").mkdir(parents=True)
        _resolve(dataset=f"folder:{tmp_path / 'no-val'}", source=SOURCE)


# ----------------------------------------------------------------------------- the CLI

def test_refusals_leave_no_run_directory(tmp_path, capsys):
    root = _folder(tmp_path / "mine", train=30, held=30)
    out = tmp_path / "run"
    code, _, err = _cli(capsys, "run", "images", "--dataset", f"folder:{root}", "--source", SOURCE,
                        "--set", "sample_sizes=100", "--out", out, "--quiet")
    _one_line_error(code, err, "sample_sizes 100 exceeds the 90 training images",
                    "--set sample_sizes=22,45,90")
    assert not out.exists()
    code, _, err = _cli(capsys, "run", "images", "--preset", "tiny", "--dataset", f"folder:{root}",
                        "--source", SOURCE, "--out", out, "--quiet")
    _one_line_error(code, err, "'width': 0.25", "--set model_width=0.5")
    assert not out.exists()


@pytest.mark.slow
def test_a_users_folder_end_to_end(tmp_path, capsys, cache):
    """`polarity run images --dataset folder:DIR` on 3 classes x 10 images (train/ and val/):
    sample sizes fitted (7, 15, 30), every trial computed, a report stating the validation
    images, the class count, chance and the derived cut-off."""
    root = _folder(tmp_path / "mine", train=10, held=10)
    out = tmp_path / "run"
    code, stdout, err = _cli(capsys, "run", "images", "--preset", "tiny", "--dataset", f"folder:{root}",
                             "--source", SOURCE, "--set", "model_width=0.5",
                             "--conditions", "fluid-rand,frozen-polarity", "--out", out, "--quiet")
    assert code == 0, err
    assert "6/6 trials complete" in stdout
    _, spec, _ = engine.load_spec(out)
    assert spec.hp.sample_sizes == (7, 15, 30) and spec.hp.val_size == 30
    report = (out / "report" / "report.md").read_text()
    assert "n = 7, 15, 30" in report
    assert "validation = all 30 held-out images" in report
    assert "3 classes: chance accuracy 0.333 (chance error 0.667)" in report
    assert "cut-off: validation accuracy 0.67 (0.5 of the way from chance to 1" in report


def test_the_report_reads_old_runs_without_the_recorded_sizes(tmp_path):
    import pandas as pd

    from polarity.experiments.images.report import _cutoff_text, _validation

    hp = dataclasses.replace(get("fmnist").presets["quick"], val_size=600)
    old = pd.DataFrame({"condition": ["fluid-rand"], "n": [100], "trial": [0]})
    assert _validation(hp, old) == "the first 600 test images"
    assert _cutoff_text(hp, old) == "Cut-off 0.8."
    new = old.assign(val_images=[600], val_pool=[10000], num_classes=[10])
    assert _validation(hp, new) == "the first 600 of 10000 held-out images"
    assert _cutoff_text(hp, new) == ("10 classes: chance accuracy 0.100 (chance error 0.900); "
                                     "cut-off: validation accuracy 0.8.")
