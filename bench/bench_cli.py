"""Benchmarks of the ``ofi-fast analyze`` pipeline and of the simulator.

Run: python -m pytest bench/bench_cli.py --benchmark-only --benchmark-columns=min,median
Each row is one call over N events; divide by N for ns/event (RESULTS.md does).

- analyze pipeline: ofi_fast.OFI.update_many + ofi_fast.bars per 1M-event chunk, merged bars,
  OLS fit and walk-forward evaluation (cli.BarBuilder + cli.summarize), what `analyze` runs
  after reading.
- numpy baseline: the same OFI formula vectorised in numpy, bars by np.bincount, lstsq fit.
- simulator: ofi_fast.simulate.simulate, 5 levels.
"""

import numpy as np
import pytest

from ofi_fast import cli
from ofi_fast.simulate import simulate

N = 2_000_000
EVERY = 10_000_000_000


@pytest.fixture(scope="module")
def chunks():
    src = cli.open_source([], events=N, seed=0, levels=1, chunk_size=1_000_000)
    return list(src.chunks())


def test_analyze_pipeline(benchmark, chunks):
    def run():
        bb = cli.BarBuilder(EVERY)
        for c in chunks:
            bb.add(c)
        return cli.summarize(bb.table(), EVERY, bb.n_events)
    s = benchmark.pedantic(run, rounds=5, iterations=1)
    assert s["events"] == N and s["r2"] > 0.3


def _numpy_ofi(bp, bs, ap, az):
    e = np.zeros_like(bs)
    e[1:] = ((bp[1:] >= bp[:-1]) * bs[1:] - (bp[1:] <= bp[:-1]) * bs[:-1]
             - (ap[1:] <= ap[:-1]) * az[1:] + (ap[1:] >= ap[:-1]) * az[:-1])
    return e


def test_numpy_baseline(benchmark, chunks):
    ts = np.concatenate([c.ts for c in chunks])
    bp, bs, ap, az = (np.concatenate([getattr(c, k) for c in chunks])
                      for k in ("bid_px", "bid_sz", "ask_px", "ask_sz"))

    def run():
        e = _numpy_ofi(bp, bs, ap, az)
        k = ts // EVERY - ts[0] // EVERY
        ofi = np.bincount(k, e)
        last = np.zeros(ofi.shape[0])
        last[k] = 0.5 * (bp + ap)                       # last write wins: the bar's close
        dmid = np.diff(np.concatenate([[0.5 * (bp[0] + ap[0])], last]))
        X = np.column_stack([np.ones_like(ofi), ofi])
        return np.linalg.lstsq(X, dmid, rcond=None)[0]
    benchmark.pedantic(run, rounds=5, iterations=1)


def test_simulate(benchmark):
    r = benchmark.pedantic(lambda: simulate(500_000, seed=1, levels=5), rounds=3, iterations=1)
    assert len(r) == 500_000
