"""One CLI convention (issue 22, item 7): every user error is one line `polarity: error: ...` with
status 2, whichever sub-command or argparse found it; unknown names get the closest known ones;
a repeated --set field is refused naming it; help texts carry no reST markup and no repeated
catalogue."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from polarity import cli
from polarity.cli_errors import did_you_mean, unknown


def _err(capsys, *argv) -> str:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.startswith("polarity: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv,needle", [
    (["run", "xor5", "--out", "{tmp}"], "unknown experiment 'xor5'; did you mean 'xor5d'? known: "),
    (["show", "toi"], "did you mean 'toy'?"),
    (["run", "toy", "--preset", "gird", "--out", "{tmp}"], "unknown preset 'gird' for experiment 'toy'; "
                                                           "did you mean 'grid'? known: quick, grid"),
    (["run", "xor5d", "--set", "widht=3", "--out", "{tmp}"], "has no hparam 'widht'; did you mean 'widths'?"),
    (["run", "toy", "--conditions", "a,bb", "--out", "{tmp}"], "unknown condition 'bb' for experiment 'toy'; "
                                                               "did you mean 'b'?"),
    (["show", "xor5d", "--conditions", "frozen-rnd"], "did you mean 'frozen-rand'"),
    (["show", "toy", "--set", "trials=10", "--set", "trials=5"],
     "--set trials is given twice ('trials=10' and 'trials=5'); give each field once"),
    (["show", "fmnist", "--source", "imagenet", "--set", "source=imagenet"], "source is given twice"),
    (["rn", "toy"], "invalid choice: 'rn'"),
    (["sho", "toy"], "did you mean 'show'?"),
    (["run", "toy", "--bogus"], "unrecognized arguments: --bogus"),
    (["run"], "give an experiment (EXP) or --config FILE"),
    (["theory", "xor", "--variant", "xor5"], "unknown variant 'xor5'; did you mean 'xor5d'"),
    (["theory"], "the following arguments are required"),
    (["source"], "source: the following arguments are required"),
    (["source", "infoo"], "did you mean 'info'?"),
    (["export", "/nonexistent/dir"], "give at least one of --csv"),
    (["show", "fmnist", "--source", "cifar10-compact-w05"], "did you mean 'cifar10-compact-w0.5'"),
    (["source", "info", "fmnist-compact"], "did you mean 'fmnist-compact-w0.5'"),
])
def test_every_user_error_is_one_line_with_a_suggestion(argv, needle, capsys, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path / "x")) for a in argv]
    assert needle in _err(capsys, *argv)
    assert not (tmp_path / "x").exists()


def test_help_has_no_rest_markup_and_no_repeated_catalogue(capsys):
    parser = cli.build_parser()
    for p in cli._walk(parser):
        text = p.format_help()
        assert ":mod:" not in text and ":meth:" not in text and "``" not in text, p.prog
        if p.prog not in ("polarity", "polarity run", "polarity show"):
            assert "experiments:" not in text, p.prog
    assert cli.main(["template", "export", "--help"]) == 0
    assert "polarity.transfer" in capsys.readouterr().out  # the role's target stays, its markup goes


@given(st.text(min_size=1, max_size=12), st.lists(st.text(min_size=1, max_size=12), max_size=8))
def test_suggestions_are_known_names_and_an_exact_name_comes_first(name, known):
    hits = did_you_mean(name, known)
    assert set(hits) <= set(known) and len(hits) <= 3
    if name in known and name.lower() not in [k.lower() for k in known if k != name]:
        assert hits[0] == name
    msg = unknown("thing", name, known)
    assert msg.startswith(f"unknown thing {name!r}") and msg.endswith("known: " + ", ".join(known))
