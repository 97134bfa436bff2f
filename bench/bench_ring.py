"""RollingSum.update_many (issue 13, helper trades3) beside numpy, same run.

    python -m pytest bench/bench_ring.py --benchmark-only -p no:randomly --benchmark-json=J
    python tools/bench_table.py J

1e6 float values, output buffer reused. Count window and no window run the block kernels of
_ring.pyx; the time window still pushes value by value (its evictions depend on the data).
The numpy peer is a cumulative-sum difference (not compensated: cheaper, less exact).
"""

import numpy as np
import pytest

from conftest import per_event
from ofi_fast import RollingSum

N = 1_000_000
W = 1000
RNG = np.random.default_rng(3)
TS = np.cumsum(RNG.integers(0, 5, N)).astype(np.int64)      # ~2 per ts unit: ~500 in W_TIME
V = (RNG.random(N) - 0.5) * 100.0
OUT = np.empty(N)
KINDS = {"none": {}, "count": {"window": W}, "time": {"window_time": W}}


@pytest.mark.parametrize("kind", list(KINDS))
def test_rolling_sum_update_many_1e6(benchmark, kind):
    benchmark.group = f"RollingSum.update_many {kind} window (N=1e6)"
    per_event(benchmark, N, "ours")
    benchmark(lambda: RollingSum(**KINDS[kind]).update_many(TS, V, out=OUT))
    r = RollingSum(**KINDS[kind])
    want = np.array([r.update(int(t), float(x)) for t, x in zip(TS[:5000], V[:5000])])
    assert np.array_equal(OUT[:5000], want)          # the same pushes: the same bits


def _np_rolling(kind):
    c = np.concatenate([[0.0], np.cumsum(V)])
    if kind == "none":
        return c[1:]
    if kind == "count":
        lo = np.maximum(np.arange(1, N + 1) - W, 0)
    else:
        lo = np.searchsorted(TS, TS - W, side="right")
    return c[1:] - c[lo]


@pytest.mark.parametrize("kind", list(KINDS))
def test_rolling_sum_numpy_1e6(benchmark, kind):
    benchmark.group = f"RollingSum.update_many {kind} window (N=1e6)"
    per_event(benchmark, N, "peer")
    got = benchmark(_np_rolling, kind)
    np.testing.assert_allclose(got, RollingSum(**KINDS[kind]).update_many(TS, V), atol=1e-6)
