"""Issue 17: the forecast table on one LOBSTER day (all defaults, target < 5 s) and the
streaming micro-price per event beside the empty-call floor (target <= 1.5x).

    python -m pytest bench/bench_forecast.py -q -p no:randomly --benchmark-columns=min,median,rounds
"""

import numpy as np
import pytest

from conftest import HERE, per_event, quotes

from ofi_fast import Microprice
from ofi_fast._microprice import _EmptyMicroCall
from ofi_fast._ofi import _EmptyCall

N_CALLS = 200_000
AAPL = HERE.parent.parent / "shared" / "data" / "lobster" / \
    "LOBSTER_SampleFile_AAPL_2012-06-21_1.zip"


@pytest.fixture(scope="module")
def small():
    ts, bp, bs, ap, az = quotes(N_CALLS)
    return ts.tolist(), (bp * 0.01).tolist(), bs.tolist(), (ap * 0.01).tolist(), az.tolist()


@pytest.fixture(scope="module")
def fitted():
    ts, bp, bs, ap, az = quotes(200_000, seed=1)
    return Microprice.fit(ts, bp * 0.01, bs, ap * 0.01, az, 0.01, max_spread=2)


def _loop(obj, ts, bp, bs, ap, az):
    upd = obj.update
    for i in range(len(ts)):
        upd(ts[i], bp[i], bs[i], ap[i], az[i])


@pytest.mark.benchmark(group="Microprice.update from Python")
def test_microprice_update(benchmark, small, fitted):
    per_event(benchmark, N_CALLS, "ours")

    def run():
        fitted.reset()
        _loop(fitted, *small)
    benchmark(run)


@pytest.mark.benchmark(group="Microprice.update from Python")
def test_empty_cpdef_floor(benchmark, small):
    per_event(benchmark, N_CALLS, "limit")
    benchmark(lambda: _loop(_EmptyCall(), *small))


@pytest.mark.benchmark(group="Microprice.update from Python")
def test_empty_micro_floor(benchmark, small):
    per_event(benchmark, N_CALLS)
    benchmark(lambda: _loop(_EmptyMicroCall(), *small))


@pytest.mark.benchmark(group="Microprice.update_many (GIL released)")
def test_microprice_update_many(benchmark, fitted):
    ts, bp, bs, ap, az = quotes(10_000_000)
    bp, ap = bp * 0.01, ap * 0.01
    out = np.empty_like(bp)
    per_event(benchmark, len(ts))

    def run():
        fitted.reset()
        fitted.update_many(ts, bp, bs, ap, az, out=out)
    benchmark(run)


@pytest.mark.benchmark(group="forecast table, LOBSTER AAPL day, all defaults")
def test_forecast_lobster_day(benchmark):
    if not AAPL.is_file():
        pytest.skip("../shared/data/lobster is absent")
    from ofi_fast.analysis import forecast
    res = benchmark.pedantic(forecast, args=(str(AAPL),), rounds=3, iterations=1)
    per_event(benchmark, res.info["events"])
    sets = 1 + len({r["feature"] for r in res.rows if r["model"] == "ols"}) - 1
    assert len(res.rows) == 6 * (2 * sets + 4)     # 6 horizons x (sets x 2 models + 4)
