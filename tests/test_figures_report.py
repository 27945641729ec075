"""The image report from a synthetic store (no training): the paired table with success counts,
the paper-family table, the AUC and common-cut-off rows, every table naming its Holm family."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from polarity.experiments.images.presets import CONDITIONS, ImageHparams
from polarity.experiments.images.report import report

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_figures_report")

CONDS = CONDITIONS + ("frozen-shuffled",)


def _store(seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, trows = [], []
    for n in (100, 250):
        for t in range(6):
            for c in CONDS:
                # frozen-rand learns slowly and reaches 0.8 in half its trials; the rest climb to 0.85-0.9
                top = 0.78 + (0.08 if t % 2 else 0.0) if c == "frozen-rand" else 0.85 + 0.05 * rng.random()
                for e in range(1, 6):
                    acc = top * (1 - 0.5 ** e) + 0.002 * rng.integers(0, 3)
                    rows.append({"condition": c, "n": n, "width": 1, "trial": t, "epoch": e,
                                 "train_loss": 1.0, "train_acc": acc, "val_loss": 1 - acc,
                                 "val_acc": acc})
                trows.append({"condition": c, "n": n, "width": 1, "trial": t,
                              "extra": json.dumps({"dataset_label": "Synthetic"})})
    return pd.DataFrame(rows), pd.DataFrame(trows)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    epochs, trials = _store()
    hp = ImageHparams(dataset="fmnist", source="none", conditions=CONDS, sample_sizes=(100, 250),
                      trials=6, epochs=5, cutoff=0.8, cutoffs=(0.5, 0.8))
    return report(hp, epochs, trials, out), out


def test_tables_name_their_holm_family_and_show_success_counts(made):
    md, out = made
    assert "### Paired comparison against" in md and "### The paper's test against" in md
    paired = md[md.index("### Paired comparison"):md.index("### The paper's test")]
    paper = md[md.index("### The paper's test"):md.index("### The common cut-off")]
    assert "Holm family (both tests, per metric): ours" in paired
    assert "Holm family (Mann-Whitney U, per metric): the paper's -- within each n" in paper
    # epochs to 0.8: frozen-rand reached it in 3 of 6 pairs, the reference in all 6
    assert "(reached 3/6 vs 6/6)" in paired
    assert "| error AUC |" in paired and "| epochs to common cut-off |" in paired
    pv = pd.read_csv(out / "pvalues_images.csv")
    assert set(pv["family"]) == {"table"} and {"reached", "reference_reached"} <= set(pv.columns)
    assert set(pv["metric"]) == {"error", "epochs_to_0.8", "error_auc", "epochs_to_common"}
    pp = pd.read_csv(out / "paper_mwu_images.csv")
    assert set(pp["family"]) == {"group"}
    # the paper's family omits failures: frozen-rand has 3 trials with a value at each n
    fr = pp[(pp.metric == "epochs_to_0.8") & (pp.condition == "frozen-rand")]
    assert (fr["count"] == 3).all()


def test_common_cutoff_every_arm_reaches(made):
    md, out = made
    common = pd.read_csv(out / "common_cutoffs_images.csv")
    assert (common["ceiling_condition"] == "frozen-rand").all() and (common["cutoff"] < 0.8).all()
    per_trial = pd.read_csv(out / "images_per_trial.csv")
    assert per_trial["epochs_to_common"].notna().mean() >= 0.5
    assert per_trial["error_auc"].between(0, 1).all()
    assert "### The common cut-off" in md


def _readme_tables():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "readme_tables.py"
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_tables_choose_by_the_runs_content(made, tmp_path):
    import shutil

    rt = _readme_tables()
    md, out = made
    # a directory whose name says XOR-5D Figure 1 but whose spec says an image run
    run = tmp_path / "xor5d-fig1-renamed"
    shutil.copytree(out, run / "report")
    (run / "spec.json").write_text(json.dumps({"experiment": "fmnist", "preset": "transfer",
                                               "hparams": {"dataset": "fmnist", "cutoff": 0.8,
                                                           "source": "none"}}))
    text = rt.table(run)
    assert "fmnist --preset transfer" in text and "Holm family (Wilcoxon signed-rank): ours" in text
    assert "(reached 3/6 vs 6/6)" in text                       # success counts beside the median
    assert "The paper's test on the error" in text and "the paper's -- within each n" in text
    assert rt.kind({"experiment": "xor5d", "hparams": {"widths": [2, 3, 64]}}) == "xor-widths"
    assert rt.kind({"experiment": "xor5d", "hparams": {"widths": [64]}}) == "xor-n"
    assert rt.kind({"experiment": "cifar10", "hparams": {}}) == "images"
    assert rt.kind({"experiment": "dose", "hparams": {}}) == "unknown"
    with pytest.raises(SystemExit, match="spec.json"):
        rt.table(tmp_path)


@pytest.mark.parametrize("recorded, shown", [("high", None), (0.75, "0.750")])
def test_a_source_accuracy_recorded_as_text_is_left_out(tmp_path, recorded, shown):
    """A run made before source manifests were checked may hold the manifest's text as the
    source's accuracy ('high'): the report leaves it out (it was a ValueError traceback)."""
    epochs, trials = _store()
    trials["extra"] = json.dumps({"dataset_label": "Synthetic", "source_val_acc": recorded})
    hp = ImageHparams(dataset="fmnist", source="none", conditions=CONDS, sample_sizes=(100, 250),
                      trials=6, epochs=5, cutoff=0.8, cutoffs=(0.5, 0.8))
    md = report(hp, epochs, trials, tmp_path)
    line = [x for x in md.splitlines() if "accuracy on its own test split" in x]
    assert (line == []) if shown is None else (len(line) == 1 and line[0].endswith(f"{shown}."))
