"""Training on the CPU is reproducible bit for bit, also from one process to the next.

The CPU backward of advanced indexing adds in thread order unless PyTorch's deterministic
algorithms are on; the Poincaré ``pairwise_dist`` takes that path, and UHML, HCL and hyperbolic
ProtoNet trained differently in every process (``harness.engine.deterministic_on_cpu``).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from harness import engine
from harness.plugins.methods.uhml import Uhml
from harness.run import run_cell
from harness.sweep import compose
from tests.test_sweep import TINY


def test_training_runs_with_deterministic_algorithms_and_restores_the_setting(tmp_path, monkeypatch):
    seen = []
    step = Uhml.training_step

    def recording_step(self, batch, state):
        seen.append((torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled()))
        return step(self, batch, state)

    monkeypatch.setattr(Uhml, "training_step", recording_step)
    assert not torch.are_deterministic_algorithms_enabled()
    config = compose(["method=uhml", "task=few_shot", *TINY, f"results_dir={tmp_path / 'r'}",
                      f"cache_dir={tmp_path / 'c'}"])
    assert run_cell(config, progress=False)["status"] == "ok"
    assert seen and set(seen) == {(True, True)}
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is back


@pytest.mark.parametrize("mode, warn_only", [(True, False), (False, False)])
def test_the_callers_setting_comes_back_also_after_an_error(mode, warn_only):
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with engine.deterministic_on_cpu(torch.device("cpu")):
                assert torch.are_deterministic_algorithms_enabled()
                raise RuntimeError("inside")
        assert (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled()) == (mode, warn_only)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


_TRAIN_ONCE = """
import json, sys
from harness.run import run_cell
from harness.sweep import compose
config = compose(sys.argv[1:])
result = run_cell(config, progress=False)
print(json.dumps([result["status"], result["training"]["epoch_loss"]]))
"""


def test_uhml_trains_identically_in_two_processes(tmp_path):
    # Without deterministic algorithms the two processes' losses differed in the 4th decimal here
    # (a race: a run can match by chance, but with them a mismatch is a bug).
    runs = []
    for tag in ("a", "b"):
        args = ["method=uhml_released_colour", "task=retrieval", "seed=0", "train.epochs=1",
                f"results_dir={tmp_path / tag}", f"cache_dir={tmp_path / tag / 'c'}"]
        out = subprocess.run([sys.executable, "-c", _TRAIN_ONCE, *args], capture_output=True, text=True,
                             check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0][0] == "ok"
    assert runs[0] == runs[1]
