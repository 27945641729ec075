"""Every script in examples/ runs to its end (each asserts 0 violations itself)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["plain_loop.py", "lightning_fit.py", "hf_trainer.py", "ddp.py"])
def test_example_runs(script):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                          text=True, timeout=180, env=env, cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "violations 0" in done.stdout
