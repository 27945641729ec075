"""One look per condition: the style map, and two figures (different functions, different
conditions beside it, different order) drawing a condition alike."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from polarity.analysis import figures
from polarity.analysis.figures import KIND_LOOK, condition_style

IMAGE = ["fluid-rand", "frozen-rand", "fluid-polarity", "frozen-polarity", "fluid-weight",
         "frozen-weight", "frozen-shuffled", "frozen-balanced", "frozen-oracle", "fluid-oracle"]
XOR = ["frozen-sufficient", "frozen-rand", "fluid-rand", "fluid-sufficient"]


def test_style_map_rules():
    looks = {c: condition_style(c) for c in IMAGE + XOR}
    for c, s in looks.items():
        state, kind = c.split("-", 1)
        assert s["ls"] == ("-" if state == "frozen" else "--")
        assert s["color"] == KIND_LOOK[kind][0] and s["marker"] == KIND_LOOK[kind][1]
        assert s["markerfacecolor"] == ("none" if state == "fluid" else s["color"])
    # every template kind its own colour and marker
    assert len({v[0] for v in KIND_LOOK.values()}) == len(KIND_LOOK)
    assert len({v[1] for v in KIND_LOOK.values()}) == len(KIND_LOOK)
    # variants keep the base's line and marker and get a colour apart from every kind's
    resets = [condition_style(f"frozen-rand@{m}") for m in ("posRand", "posCon", "zero", "flip")]
    assert len({r["color"] for r in resets}) == 4
    assert all(r["ls"] == "-" and r["marker"] == "o" for r in resets)
    assert not {r["color"] for r in resets} & {v[0] for v in KIND_LOOK.values()}


def test_unknown_names_get_a_look_from_a_stable_hash():
    # zlib.crc32 of the name, not Python's salted hash(): the same look in every process and run
    from polarity.analysis.figures import FALLBACK_COLORS, FALLBACK_MARKERS

    h = zlib.crc32(b"frozen-mystery")
    s = condition_style("frozen-mystery")
    assert (s["color"], s["marker"], s["ls"]) == (FALLBACK_COLORS[h % len(FALLBACK_COLORS)],
                                                  FALLBACK_MARKERS[h % len(FALLBACK_MARKERS)], "-")
    v = condition_style("fluid-polarity@src-3")
    assert v["color"] == FALLBACK_COLORS[zlib.crc32(b"src-3") % len(FALLBACK_COLORS)]
    assert (v["ls"], v["marker"], v["markerfacecolor"]) == ("--", "s", "none")
    assert condition_style("frozen-mystery") == s


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions close, kept for inspection."""
    from matplotlib.figure import Figure

    figs, close = [], figures.plt.close
    monkeypatch.setattr(figures.plt, "close",
                        lambda fig=None: figs.append(fig) if isinstance(fig, Figure) else close(fig))
    yield figs
    for f in figs:
        close(f)


def _looks(fig) -> dict:
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                out[line.get_label()] = (to_hex(line.get_color()), line.get_linestyle(), line.get_marker(),
                                         str(line.get_markerfacecolor()))
    return out


def _trials(conds, rng):
    return pd.DataFrame([{"condition": c, "n": n, "trial": t, "error": rng.random(),
                          "epochs_to_0.8": rng.integers(1, 9)}
                         for c in conds for n in (100, 250) for t in range(3)])


def test_two_figures_draw_a_condition_alike(tmp_path, drawn):
    rng = np.random.default_rng(0)
    # figure 1: a band plot of three conditions
    figures.plot_band(_trials(["fluid-rand", "frozen-polarity", "frozen-weight"], rng), "n", "error",
                      tmp_path / "a")
    # figure 2 (another "run"): other conditions beside it, another order, another function
    conds = ["frozen-shuffled", "fluid-oracle", "frozen-polarity", "fluid-rand"]
    epochs = pd.DataFrame([{"condition": c, "n": 100, "epoch": e, "trial": 0, "val_acc": rng.random()}
                           for c in conds for e in range(1, 6)])
    figures.plot_learning_curves(epochs, tmp_path / "b", conds,
                                 {"fluid-oracle": {"label": "Fluid oracle (upper bound)"}})
    summ = _trials(conds, rng).groupby(["condition", "n"], as_index=False)["error"].median()
    figures.plot_panels(summ, "n", [("error", "error")], tmp_path / "c", list(reversed(conds)))
    a, b, c = (_looks(f) for f in drawn)
    for cond in ("frozen-polarity", "fluid-rand"):
        assert a[cond] == b[cond] == c[cond]
        s = condition_style(cond)
        assert a[cond][:3] == (s["color"], s["ls"], s["marker"])
    assert b["Fluid oracle (upper bound)"] == c["fluid-oracle"]   # a label changes no look
    assert a["fluid-rand"][1] == "--" and a["frozen-polarity"][1] == "-"
    assert a["fluid-rand"][3] == "none"                             # open marker: fluid


def test_non_condition_groups_keep_distinct_colours(tmp_path, drawn):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame([{"layer": f"fc{k}", "epoch": e, "switch": rng.random()}
                          for k in range(4) for e in range(1, 4)])
    figures.plot_band(frame, "epoch", "switch", tmp_path / "s", by="layer")
    looks = _looks(drawn[0])
    assert len({v[0] for v in looks.values()}) == 4
