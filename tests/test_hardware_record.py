"""Each trial's hardware record names what picks the CPU kernels (README: which numbers are
bit-reproducible where)."""
import json
import os
import subprocess
import sys

from polarity.engine.hardware import hardware_info


def test_the_record_names_what_picks_the_cpu_kernels():
    info = hardware_info()
    for key in ("cpu_isa", "torch_cpu_capability", "onednn_max_isa"):
        assert info[key], key


def test_a_capped_instruction_set_is_recorded():
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41")
    out = subprocess.run([sys.executable, "-c", "import json; from polarity.engine.hardware import hardware_info; "
                          "print(json.dumps(hardware_info()))"], env=env, capture_output=True, text=True, timeout=300)
    info = json.loads(out.stdout)
    assert info["torch_cpu_capability"] == "DEFAULT" and info["onednn_max_isa"] == "SSE41"
