"""Shared benchmark fixtures: realistic quote streams and the plain C baseline loop."""

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def quotes(n, seed=0):
    """A best-quote stream in ticks: random-walk mid, spread 1-3 ticks, integer sizes, ns ts."""
    rng = np.random.default_rng(seed)
    mid = 10_000 + np.cumsum(rng.integers(-1, 2, n) * (rng.random(n) < 0.1))
    spread = 1 + (rng.random(n) < 0.2)
    bid_px = (mid - spread // 2).astype(np.float64)
    ask_px = bid_px + spread
    bid_sz = rng.integers(1, 500, n).astype(np.float64)
    ask_sz = rng.integers(1, 500, n).astype(np.float64)
    ts = np.cumsum(rng.integers(1, 200_000, n)).astype(np.int64)  # ~10k events per second
    return ts, bid_px, bid_sz, ask_px, ask_sz


@pytest.fixture(scope="session")
def c_l1_ofi():
    """ctypes handle to bench/cloop.c compiled with gcc -O2 (skips if no compiler)."""
    src = HERE / "cloop.c"
    assert src.is_file(), f"{src} is missing: the C baseline is part of the benchmark"
    out = HERE / "_cbuild" / "libcloop.so"
    out.parent.mkdir(exist_ok=True)
    try:
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(out), str(src)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no C compiler for the baseline: {exc}")
    lib = ctypes.CDLL(str(out))
    f = lib.l1_ofi_c
    p = ctypes.POINTER(ctypes.c_double)
    f.argtypes = [p, p, p, p, p, ctypes.c_long]

    def call(bp, bs, ap, az, out):
        f(*(a.ctypes.data_as(p) for a in (bp, bs, ap, az, out)), len(bp))
        return out
    return call


def per_event(benchmark, n):
    """Store n so the RESULTS table can be divided into ns/event."""
    benchmark.extra_info["events"] = n
