"""`polarity export` output for other programs (issue 22, item 9): JSON-valued columns are JSON,
not Python reprs; a reader that closes the pipe early ends the export quietly."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from polarity import cli


def test_hardware_and_extra_columns_are_json(tmp_path, capsys):
    d = tmp_path / "run"
    assert cli.main(["run", "toy", "--set", "sample_sizes=8", "--set", "trials=1", "--out", str(d), "--quiet",
                     "--no-report"]) == 0
    t = tmp_path / "t.csv"
    assert cli.main(["export", str(d), "--csv", str(tmp_path / "e.csv"), "--trials-csv", str(t)]) == 0
    df = pd.read_csv(t)
    for col in ("hardware", "extra"):
        values = [json.loads(v) for v in df[col]]
        assert all(isinstance(v, dict) and v for v in values), df[col]
    assert json.loads(df["hardware"][0])["threads"] == 1 and "final_w_norm" in json.loads(df["extra"][0])


def test_csv_to_a_closed_pipe_ends_quietly(tmp_path):
    d = tmp_path / "run"
    assert cli.main(["run", "toy", "--set", "sample_sizes=8,16,32", "--set", "trials=5", "--set", "epochs=50",
                     "--out", str(d), "--quiet", "--no-report"]) == 0  # 1,500 rows: more than a pipe holds
    r = subprocess.run(f"'{sys.executable}' -m polarity export '{d}' --csv - | head -1; "
                       "echo \"${PIPESTATUS[0]}\"", shell=True, capture_output=True, text=True, timeout=300,
                       executable="/bin/bash")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("experiment,condition,n,width,trial,epoch") and len(lines) == 2, r.stdout
    assert lines[-1] == "0" and r.stderr == "", r.stderr  # status 0, no 'Broken pipe' message
