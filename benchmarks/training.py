"""Measure training throughput: the Lightning loop against a plain PyTorch loop, and model FLOP utilization.

Both loops train the same freshly initialized tiny-recipe model on the same
pre-collated batches of the demo corpus, with the recipe's optimizer, learning
rate schedule and gradient clipping, so the difference is the loop itself:
Lightning's hooks, logging and checks. Each loop runs ``--repeats`` times,
alternating, and the medians are compared. Model FLOP utilization (MFU) is
the model's training FLOPs per second (6 per parameter per token for the
matrix multiplications, plus attention) divided by the machine's measured
float32 matrix multiplication rate; a torch.profiler table of the top
operators shows where the rest of the time goes.

Run from the repository root after ``diffuspeech demo`` (about 3 minutes on 2 CPU cores):

    python benchmarks/training.py

It writes ``benchmarks/results/training.json`` and the training section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_CHECKPOINT, DEFAULT_DATA_DIR, machine, machine_line, replace_section, require_inputs

from diffuspeech.data.datamodule import Batch, SpeechTextDataModule
from diffuspeech.data.features import UnitCache
from diffuspeech.inference import load_checkpoint
from diffuspeech.system import System, build_backbone
from diffuspeech.training.module import DiffusionLM

log = logging.getLogger("benchmarks.training")


def collect_batches(system: System, data_dir: Path, count: int) -> list[Batch]:
    """Return ``count`` training batches of the recipe's mixture, collated once."""
    data = SpeechTextDataModule(system, UnitCache(system.speech_tokenizer, data_dir / "cache"), data_dir / "manifests")
    data.setup("fit")
    batches = []
    for batch in data.train_dataloader():
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def fresh_module(system: System, seed: int) -> DiffusionLM:
    """Return the training module with newly initialized backbone weights."""
    torch.manual_seed(seed)
    return DiffusionLM(system, build_backbone(system.recipe, system.vocabulary))


class StepTimer(L.Callback):
    """Record the wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        if index == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self.end = time.perf_counter()


def lightning_seconds(system: System, batches: list[Batch], warmup: int, device: str) -> float:
    """Train with ``lightning.Trainer`` over ``batches``; return the seconds of the steps after warm-up."""
    module = fresh_module(system, 0)
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=len(batches),
        accelerator=device,
        devices=1,
        precision="32-true",
        gradient_clip_val=float(system.recipe.training.gradient_clip),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=int(system.recipe.training.log_every_n_steps),
        callbacks=[timer],
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)  # type: ignore[arg-type,var-annotated]
    trainer.fit(module, train_dataloaders=loader)
    return timer.end - timer.start


def plain_seconds(system: System, batches: list[Batch], warmup: int, device: str) -> float:
    """Train with a hand-written loop over ``batches``; return the seconds of the steps after warm-up."""
    module = fresh_module(system, 0).to(device)
    module.train()
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"]
    scheduler = configured["lr_scheduler"]["scheduler"]
    clip = float(system.recipe.training.gradient_clip)
    start = time.perf_counter()
    for index, batch in enumerate(batches):
        if index == warmup:
            start = time.perf_counter()
        loss = module._loss(batch.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        scheduler.step()
        float(loss.detach())
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def matmul_rate(device: str, size: int = 1024, repeats: int = 20) -> float:
    """Return the measured float32 matrix multiplication rate in FLOP/s (median of ``repeats``)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def training_flops_per_token(system: System, mean_length: float) -> float:
    """Estimate training FLOPs per token: 6 per matmul weight, plus attention scores and mixing.

    Embedding lookups cost no multiplications. Attention adds 2 x 2 x n x d
    multiply-adds per token and layer forward (scores and weighted sum),
    times 3 for the backward pass.
    """
    args = system.recipe.backbone.args
    backbone = build_backbone(system.recipe, system.vocabulary)
    embedding = backbone.transformer["wte"].weight.numel()
    matmul_parameters = sum(p.numel() for p in backbone.parameters() if p.dim() == 2) - embedding
    attention = 12 * int(args.n_layers) * mean_length * int(args.d_model)
    return 6 * matmul_parameters + attention


def profile_table(system: System, batches: list[Batch], device: str, rows: int = 10) -> list[dict[str, Any]]:
    """Profile a few plain training steps and return the operators with the most self time."""
    module = fresh_module(system, 0).to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as profiler:
        for batch in batches:
            loss = module._loss(batch.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    return [
        {
            "operator": event.key,
            "calls": event.count,
            "self_ms": round(event.self_cpu_time_total / 1000, 1),
            "share": round(100 * event.self_cpu_time_total / total, 1),
        }
        for event in events[:rows]
    ]


def tables(report: dict[str, Any]) -> str:
    """Render the training section of the benchmark page."""
    lines = [machine_line(report["machine"]), ""]
    lines += [
        f"{report['timed_steps']} timed steps after {report['warmup']} warm-up steps, batch "
        f"{report['batch_size']}, {report['mean_length']:.1f} tokens per sequence on average; "
        f"median of {report['repeats']} runs per loop:",
        "",
        "| loop | seconds | tokens/s |",
        "|---|---|---|",
        f"| plain PyTorch | {report['plain_seconds']} | {report['plain_tokens_per_second']} |",
        f"| Lightning | {report['lightning_seconds']} | {report['lightning_tokens_per_second']} |",
        "",
        f"Lightning overhead: {report['overhead_percent']}% (target: at most 5%).",
        "",
        f"Model FLOP utilization: {report['training_flops_per_token'] / 1e6:.2f} MFLOP per token x "
        f"{report['plain_tokens_per_second']} tokens/s = {report['achieved_gflops']} GFLOP/s, against "
        f"{report['matmul_gflops']} GFLOP/s measured for a float32 1024 x 1024 matmul: "
        f"**{report['mfu_percent']}%** (target: at least 50%).",
        "",
        "Top operators by self CPU time over a few plain training steps (torch.profiler):",
        "",
        "| operator | calls | self ms | share (%) |",
        "|---|---|---|---|",
    ]
    for row in report["profile"]:
        lines.append(f"| `{row['operator']}` | {row['calls']} | {row['self_ms']} | {row['share']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint whose recipe is used")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="corpus folder of the checkpoint")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing starts")
    parser.add_argument("--repeats", type=int, default=3, help="runs per loop; medians are compared")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/training.json"))
    parser.add_argument("--no-page", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    require_inputs(args.checkpoint, args.data_dir)

    info = machine()
    system = load_checkpoint(args.checkpoint).system
    batches = collect_batches(system, args.data_dir, args.warmup + args.steps)
    timed_tokens = sum(int(batch.attention_mask.sum()) for batch in batches[args.warmup :])
    mean_length = statistics.mean(float(batch.attention_mask.sum(dim=1).float().mean()) for batch in batches)

    lightning_runs, plain_runs = [], []
    for repeat in range(args.repeats):
        plain_runs.append(plain_seconds(system, batches, args.warmup, args.device))
        lightning_runs.append(lightning_seconds(system, batches, args.warmup, args.device))
        log.info("run %d: plain %.3f s, lightning %.3f s", repeat, plain_runs[-1], lightning_runs[-1])
    plain = statistics.median(plain_runs)
    lightning = statistics.median(lightning_runs)

    flops_per_token = training_flops_per_token(system, mean_length)
    rate = matmul_rate(args.device)
    achieved = flops_per_token * timed_tokens / plain
    report = {
        "machine": info,
        "batch_size": batches[0].tokens.shape[0],
        "timed_steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "mean_length": mean_length,
        "plain_runs": plain_runs,
        "lightning_runs": lightning_runs,
        "plain_seconds": round(plain, 3),
        "lightning_seconds": round(lightning, 3),
        "plain_tokens_per_second": round(timed_tokens / plain),
        "lightning_tokens_per_second": round(timed_tokens / lightning),
        "overhead_percent": round(100 * (lightning - plain) / plain, 1),
        "training_flops_per_token": flops_per_token,
        "achieved_gflops": round(achieved / 1e9, 2),
        "matmul_gflops": round(rate / 1e9, 1),
        "mfu_percent": round(100 * achieved / rate, 1),
        "profile": profile_table(system, batches[: args.warmup], args.device),
    }
    log.info("%s", {key: value for key, value in report.items() if key != "profile"})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    if not args.no_page:
        replace_section("training", tables(report))
        print("updated docs/benchmarks.md")


if __name__ == "__main__":
    main()
