"""Shared benchmark fixtures: realistic quote streams, the LOBSTER day, the C baseline loops."""

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


class CLoops:
    """bench/cloop.c compiled with one -O level, its functions callable on numpy arrays."""

    def __init__(self, opt):
        src = HERE / "cloop.c"
        assert src.is_file(), f"{src} is missing: the C baseline is part of the benchmark"
        out = HERE / "_cbuild" / f"libcloop{opt}.so"
        out.parent.mkdir(exist_ok=True)
        try:
            subprocess.run(["cc", opt, "-shared", "-fPIC", "-o", str(out), str(src)],
                           check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.fail(f"cannot build the C baseline: {exc}")
        self.lib = ctypes.CDLL(str(out))
        d, i64, lng = ctypes.POINTER(ctypes.c_double), ctypes.c_int64, ctypes.c_long
        self.lib.update_many_count_c.argtypes = [d] * 6 + [lng, lng]
        self.lib.update_many_time_c.argtypes = [ctypes.c_void_p] + [d] * 6 + [lng, i64]
        for f in ("l1_ofi_c", "l1_ofi_c_v2", "l1_ofi_c_if"):
            getattr(self.lib, f).argtypes = [d] * 5 + [lng]
        self._d = d

    def _p(self, *arrays):
        return [a.ctypes.data_as(self._d) for a in arrays]

    def l1(self, bp, bs, ap, az, out, variant="l1_ofi_c"):
        getattr(self.lib, variant)(*self._p(bp, bs, ap, az, out), len(bp))
        return out

    def count(self, bp, bs, ap, az, out, v, window):
        self.lib.update_many_count_c(*self._p(bp, bs, ap, az, out, v), len(bp), window)
        return out, v

    def time(self, ts, bp, bs, ap, az, out, v, window_time):
        self.lib.update_many_time_c(ts.ctypes.data, *self._p(bp, bs, ap, az, out, v), len(bp),
                                    window_time)
        return out, v


@pytest.fixture(scope="session")
def cloop_O2():
    return CLoops("-O2")


@pytest.fixture(scope="session")
def cloop_O3():
    return CLoops("-O3")


@pytest.fixture(scope="session")
def c_l1_ofi(cloop_O2):
    """The -O2 branch-free l1 loop (kept for the other suites that use it)."""
    def call(bp, bs, ap, az, out):
        return cloop_O2.l1(bp, bs, ap, az, out)
    return call


def lobster_day(name="AAPL"):
    """A LOBSTER level-1 day (best quotes, dummy prices for empty sides) and its ns
    timestamps, or None when ../shared/data is absent."""
    import io
    import zipfile
    path = HERE.parent.parent / "shared" / "data" / "lobster" / \
        f"LOBSTER_SampleFile_{name}_2012-06-21_1.zip"
    if not path.is_file():
        return None
    stem = f"{name}_2012-06-21_34200000_57600000"
    with zipfile.ZipFile(path) as z:
        book = np.loadtxt(io.TextIOWrapper(z.open(f"{stem}_orderbook_1.csv")), delimiter=",")
        msg = np.loadtxt(io.TextIOWrapper(z.open(f"{stem}_message_1.csv")), delimiter=",",
                         usecols=0)
    ap, az, bp, bs = (np.ascontiguousarray(c) for c in book.T)
    return np.round(msg * 1e9).astype(np.int64), bp, bs, ap, az


def tiled(day, n):
    """``day``'s arrays repeated to n events (timestamps shifted to stay non-decreasing)."""
    ts, *cols = day
    k = -(-n // len(ts))
    span = ts[-1] - ts[0] + 1
    t = (ts[None, :] + span * np.arange(k)[:, None]).ravel()[:n]
    return (np.ascontiguousarray(t), *(np.ascontiguousarray(np.tile(c, k)[:n]) for c in cols))


def per_event(benchmark, n, role=None):
    """Store n so the RESULTS table can be divided into ns/event; ``role`` ("limit": a
    branch-free C loop of the same work; "peer": the best other implementation, numba or
    numpy) lets tools/bench_table.py print the ratios to both."""
    benchmark.extra_info["events"] = n
    if role:
        benchmark.extra_info["role"] = role
