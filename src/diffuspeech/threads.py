"""A context manager that limits torch's and the BLAS/OpenMP thread pools.

Small per-utterance work (log-mels, STFTs, k-means assignments, Griffin-Lim)
runs much faster on one thread than on two contending ones. On a 2-core
machine, an STFT of one utterance took about 30 ms with 2 threads and 0.1 ms
with 1. Fitting 1024 k-means units took 58 s against 5 s (measured while
writing ``benchmarks/codec_roundtrip.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


@contextmanager
def limited_threads(count: int = 1) -> Iterator[None]:
    """Run the body with at most ``count`` threads in torch and in native thread pools."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(previous)
