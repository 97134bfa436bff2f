"""Benchmarks of the ``ofi-fast analyze`` pipeline and of the simulator.

Run: python -m pytest bench/bench_cli.py --benchmark-only --benchmark-columns=min,median
Each row is one call over N events; divide by N for ns/event (RESULTS.md does).

- analyze pipeline: ofi_fast.OFI.update_many + ofi_fast.bars per 1M-event chunk, TradeFlow
  on the trades, merged bars, fit_impact, walk-forward (RollingOLS), next-bar forecast
  (analysis.walk_forward) and bar VPIN (pipeline.BarBuilder + pipeline.summarize): what `analyze` runs
  after reading.
- L2 pipeline: the same on the Binance spot recording's deltas through BookOFI (batch_end),
  the reader's output held in memory (skipped without the data).
- numpy baseline: the same OFI formula vectorised in numpy, bars by np.bincount, lstsq fit.
- simulator: ofi_fast.simulate.simulate, 5 levels.
"""

import numpy as np
import pytest

from ofi_fast import feeds, pipeline
from ofi_fast.simulate import simulate

N = 2_000_000
EVERY = 10_000_000_000


@pytest.fixture(scope="module")
def chunks():
    src = feeds.open(None, events=N, seed=0, levels=1, chunk_rows=1_000_000)
    return list(src.chunks())


def test_analyze_pipeline(benchmark, chunks):
    def run():
        bb = pipeline.BarBuilder(EVERY, tick_size=0.01)
        for c in chunks:
            bb.add(c)
        return pipeline.summarize(bb.table(), EVERY, bb.n_events, bb=bb)[0]
    s = benchmark.pedantic(run, rounds=5, iterations=1)
    assert s["events"] == N and s["r2"] > 0.3 and s["vpin_median"] > 0


def test_l2_pipeline(benchmark):
    import os
    from pathlib import Path
    d = Path(os.environ.get("OFI_FAST_DATA", Path(__file__).resolve().parents[2] / "shared"
                            / "data")) / "binance_hftbacktest" / "spot" / "btcusdt_20240808.gz"
    if not d.exists():
        pytest.skip(f"{d} not available")
    src = feeds.open(str(d))
    chunks = list(src.chunks())
    n = sum(len(c) for c in chunks)
    benchmark.extra_info["rows"] = n

    def run():
        bb = pipeline.BarBuilder(EVERY, kind="deltas")
        for c in chunks:
            bb.add(c)
        return pipeline.summarize(bb.table(), EVERY, bb.n_events, bb=bb)[0]
    s = benchmark.pedantic(run, rounds=5, iterations=1)
    assert s["messages"] == 3449


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
