"""Lightning DDP over two CPU processes (gloo) against one process with the combined batch.

``ddp_training.py`` trains the tiny recipe's model (shrunk) for a few steps on
fixed batches with deterministic masking. Launched by ``torch.distributed.run``
(the module behind ``torchrun``) with two processes, each rank trains on half
of every batch. Alone, one process trains on the whole batch. Because the loss
is a mean over sequences, averaging the two ranks' gradients must give the
combined batch's gradient. So the mean of the ranks' losses must equal the
single process's loss at every step, and all weights must agree at the end.

Tolerance: 1e-5 relative on losses and 1e-4 absolute on weights, for float32
sums taken in a different order (measured on 2 CPU cores: 3e-7 and 5e-6).
AdamW and gradient clipping are invariant to the gradients' scale, so the
test checks that gradients are synchronized and combined, not the
1/world_size factor itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("ddp_training.py")


def free_port() -> int:
    """Return a free TCP port on the loopback interface for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ddp_matches_combined_batch(tmp_path: Path) -> None:
    """Two DDP ranks reach the losses and weights of one process trained on the combined batch."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    rendezvous = ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    processes = {
        "ddp": subprocess.Popen(
            [*launcher, *rendezvous, str(SCRIPT), str(tmp_path / "ddp")],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
        "single": subprocess.Popen(
            [sys.executable, str(SCRIPT), str(tmp_path / "single")],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
    }
    for name, process in processes.items():
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, f"{name} run failed:\n{output[-3000:]}"

    single = torch.load(tmp_path / "single.rank0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"ddp.rank{rank}.pt", weights_only=True) for rank in range(2)]

    assert ranks[0]["world_size"] == 2
    assert single["world_size"] == 1
    assert len(single["losses"]) == 4
    for step, expected in enumerate(single["losses"]):
        mean = (ranks[0]["losses"][step] + ranks[1]["losses"][step]) / 2
        assert mean == pytest.approx(expected, rel=1e-5), f"step {step}"
    assert single["losses"][-1] < single["losses"][0]
    for rank in ranks:
        for name, tensor in single["weights"].items():
            torch.testing.assert_close(rank["weights"][name], tensor, rtol=0, atol=1e-4)
