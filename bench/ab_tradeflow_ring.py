"""Same-run A/B of TradeFlow.update_many windows (issue 13 item 5, helper ring4).

python bench/ab_tradeflow_ring.py MODE N REPS: MODE count | time | volume | timegrow; prints
min and median ns/trade over REPS fresh TradeFlow objects, and which ofi_fast was imported
(put a copy of main built in place first on PYTHONPATH for the other side of the A/B).
"""
import sys

import numpy as np

from _ab import run_ab
from ofi_fast import TradeFlow

mode, n, reps = sys.argv[1], int(float(sys.argv[2])), int(sys.argv[3])
rng = np.random.default_rng(7)
ts = np.cumsum(rng.integers(0, 5, n)).astype(np.int64)
px = 100 + np.cumsum(rng.integers(-1, 2, n)) * 0.01
size = rng.integers(1, 100, n).astype(np.float64)
side = rng.choice(np.array([-1, 0, 1], dtype=np.int8), n)
kw = {"count": dict(window=1000), "time": dict(window_time=1000),
      "volume": dict(window_volume=50_000.0), "timegrow": dict(window_time=1000, capacity=2, grow=True)}[mode]
run_ab(mode, n, reps, lambda: TradeFlow(**kw), lambda tf: tf.update_many(ts, px, size, side))
