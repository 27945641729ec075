"""The `polarity theory` subcommands, on a parser built here (the engine's cli adds them too)."""
from __future__ import annotations

import argparse
import csv

import numpy as np
import pandas as pd
import pytest

from polarity.theory import exact_probability, reference_probability
from polarity.theory.cli import add_parser, empirical_success, parse_widths


def _parser():
    p = argparse.ArgumentParser(prog="polarity")
    add_parser(p.add_subparsers(dest="cmd"))
    return p


def _run(argv, capsys):
    args = _parser().parse_args(argv)
    rc = args.func(args)
    return rc, capsys.readouterr()


def test_parse_widths():
    assert parse_widths("1-5") == [1, 2, 3, 4, 5]
    assert parse_widths("2,4,1-2") == [1, 2, 4]
    for bad in ("5-1", "a", "-3", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_widths(bad)


def test_theory_xor_table_and_csv(tmp_path, capsys):
    out = tmp_path / "t.csv"
    rc, cap = _run(["theory", "xor", "--widths", "1-6", "--csv", str(out)], capsys)
    assert rc == 0
    lines = [l for l in cap.out.splitlines() if l and not l.startswith("#")]
    assert lines[0].split()[:4] == ["width", "reference", "xor5d", "xor5d-corners"]
    assert len(lines) == 7
    rows = list(csv.DictReader(open(out)))
    assert [int(r["width"]) for r in rows] == list(range(1, 7))
    for r in rows:
        w = int(r["width"])
        assert float(r["reference"]) == pytest.approx(reference_probability(w))
        assert float(r["xor5d"]) == pytest.approx(exact_probability(w, "xor5d")[0])
        assert float(r["xor5d-corners"]) == pytest.approx(exact_probability(w, "xor5d-corners")[0])


def test_theory_xor_monte_carlo_shows_interval(capsys):
    rc, cap = _run(["theory", "xor", "--widths", "3", "--variant", "signed-bias", "--samples", "500"], capsys)
    assert rc == 0 and "Wilson" in cap.out and "[" in cap.out


def test_theory_xor_bad_variant(capsys):
    rc, cap = _run(["theory", "xor", "--widths", "3", "--variant", "bogus"], capsys)
    assert rc == 2 and "unknown variant" in cap.err


def _fake_export(path):
    rows = []
    rng = np.random.default_rng(0)
    for width, succ in ((3, 1), (4, 2)):
        for trial in range(4):
            reach = trial < succ
            for epoch in range(1, 4):
                acc = 0.95 if (reach and epoch == 3) else 0.6
                rows.append(dict(experiment="xor5d", condition="frozen-rand", n=500, width=width, trial=trial,
                                 epoch=epoch, train_loss=1.0, train_acc=acc, val_loss=1.0 - 0.1 * epoch,
                                 val_acc=acc))
                rows.append(dict(experiment="xor5d", condition="fluid-rand", n=500, width=width, trial=trial,
                                 epoch=epoch, train_loss=1.0, train_acc=0.99, val_loss=rng.random(), val_acc=0.99))
    pd.DataFrame(rows).to_csv(path, index=False)


def test_empirical_column_from_export(tmp_path, capsys):
    f = tmp_path / "export.csv"
    _fake_export(f)
    emp = empirical_success(f)
    assert emp == {3: (0.25, 4), 4: (0.5, 4)}
    rc, cap = _run(["theory", "xor", "--widths", "3-5", "--run", str(f)], capsys)
    assert rc == 0 and "frozen-rand" in cap.out
    body = [l.split() for l in cap.out.splitlines() if l and l[0] != "#"][1:]
    assert [b[-2] for b in body] == ["0.250", "0.500", "nan"]


def test_run_missing(tmp_path, capsys):
    rc, cap = _run(["theory", "xor", "--widths", "3", "--run", str(tmp_path / "nope")], capsys)
    assert rc == 2 and "--run" in cap.err


def test_theory_lemma(capsys):
    rc, cap = _run(["theory", "lemma"], capsys)
    assert rc == 0
    assert "512000" in cap.out and "8000" in cap.out and "2^6" in cap.out
