"""Every script in examples/ runs to its end (each asserts 0 violations itself).

The single-process ones run in this process as ``python SCRIPT`` would run them (``runpy`` as
``__main__``: their imports are already paid here); ddp.py spawns ranks that import it by name, so
it runs in its own Python."""
import os
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["plain_loop.py", "lightning_fit.py", "hf_trainer.py"])
def test_example_runs(script, capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert "violations 0" in capsys.readouterr().out


def test_ddp_example_runs():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, str(EXAMPLES / "ddp.py")], capture_output=True,
                          text=True, timeout=180, env=env, cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "violations 0" in done.stdout
