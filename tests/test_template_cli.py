"""`polarity template info|export` through the real command line entry point."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from polarity import Template, cli

DATA = Path(__file__).parent / "data"


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_prints_bits_per_sign(tmp_path, capsys):
    s = torch.ones(100, 80, dtype=torch.int8)
    s[0, 0] = s[5, 7] = 0
    path = Template({"fc.weight": s}, {"source": "test"}).save(tmp_path / "t.polarity")
    code, out, err = _run(capsys, "template", "info", str(path))
    assert code == 0 and not err
    size = path.stat().st_size
    m = re.search(r"format 2, 1 parameters, 8,000 signs, ([\d,]+) bytes: ([\d.]+) bits per sign "
                  r"\(payload only ([\d.]+)\)", out)
    assert m, out
    assert int(m[1].replace(",", "")) == size
    assert float(m[2]) == round(size * 8 / 8000, 4)
    # 7,998 sign bits in 1,000 bytes; free indices 0 and 407: gaps 0 and 406, varints of 1 + 2 bytes
    assert float(m[3]) == round((1000 + 3) * 8 / 8000, 4)
    assert re.search(r"fc\.weight .* list \(2\)", out)


def test_info_reads_format1(capsys):
    code, out, _ = _run(capsys, "template", "info", str(DATA / "template_format1.polarity"))
    assert code == 0 and "format 1, 3 parameters, 83 signs, 520 bytes" in out


def test_info_on_a_bad_path_is_one_line_with_status_2(tmp_path, capsys):
    for bad in (tmp_path, tmp_path / "missing.polarity"):
        code, out, err = _run(capsys, "template", "info", str(bad))
        assert code == 2 and not out
        assert err.count("\n") == 1 and err.startswith("polarity: error: ")


def test_export_to_an_existing_directory_is_one_line_with_status_2(tmp_path, capsys):
    code, out, err = _run(capsys, "template", "export", "--source", "pretrained:cifar10",
                          "--dataset", "fmnist", "--out", str(tmp_path))
    assert code == 2 and not out
    assert err == f"polarity: error: --out {tmp_path} is a directory; give a file name\n"
