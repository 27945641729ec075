"""The CLI as the data-safety and store tests call it: run ``polarity ARGV`` in-process, and the
one-line error convention (``polarity: error: ...``, status 2, no traceback) they all check."""
from polarity import cli


def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("polarity: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
