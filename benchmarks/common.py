"""Helpers shared by the benchmark scripts: machine description, checkpoint checks, page updates."""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

DEFAULT_CHECKPOINT = Path("outputs/runs/tiny/checkpoints/last.ckpt")
DEFAULT_DATA_DIR = Path("outputs/data/arithmetic")
PAGE = Path("docs/benchmarks.md")


def machine() -> dict[str, Any]:
    """Describe where the numbers come from: CPU model and cores, GPU, torch version and load."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }


def require_inputs(checkpoint: Path, data_dir: Path) -> None:
    """Exit with status 2 and the command to run when the demo's checkpoint or corpus is missing."""
    missing = [str(path) for path in (checkpoint, data_dir / "manifests" / "test.jsonl") if not path.exists()]
    if missing:
        print(
            f"error: {', '.join(missing)} not found. Run `diffuspeech demo` first (it writes "
            f"{DEFAULT_CHECKPOINT} and {DEFAULT_DATA_DIR}), or pass --checkpoint and --data-dir.",
            file=sys.stderr,
        )
        sys.exit(2)


def median_seconds(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Run ``run`` ``repeats`` times and return the median wall time in seconds and the last result."""
    times = []
    result = None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def replace_section(name: str, text: str, page: Path = PAGE) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``page``."""
    content = page.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(content):
        raise SystemExit(f"error: {page} has no section markers for {name!r}; restore them from git")
    page.write_text(pattern.sub(lambda match: match.group(1) + text.rstrip() + "\n" + match.group(2), content), "utf-8")


def machine_line(info: dict[str, Any]) -> str:
    """Return one Markdown line naming the machine and its load."""
    device = f"GPU {info['gpu']}" if info["gpu"] else f"{info['cores']} CPU cores ({info['cpu']})"
    return (
        f"Measured on {device}, torch {info['torch']}, {info['torch_threads']} threads, "
        f"load average {info['load_average_at_start']} at the start."
    )
