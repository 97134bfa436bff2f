"""Same-run A/B of MultiLevelOFI and RollingOLS update_many on the shared ring (issue 13 item
5, helper ring5).

python bench/ab_ring_users.py MODE N REPS, MODE one of
  mlofi_count     MultiLevelOFI(levels=5, window=1000)
  mlofi_time      MultiLevelOFI(levels=5, window_time=1000)           (default capacity)
  mlofi_timegrow  MultiLevelOFI(levels=5, window_time=1000, capacity=2, grow=True)
  ols_count       RollingOLS(window=1000)                             (one regressor: hot path)
  ols_count3      RollingOLS(window=1000, n_features=3)
  ols_time        RollingOLS(window_time=1000)
  ols_timegrow    RollingOLS(window_time=1000, capacity=2, grow=True)
Events: ts steps 0-4 (a time window of 1000 holds ~500 events), a random-walk top-5 book with
sizes 0-29 (about 1 in 30 a level emptied), OLS x ~ N(0, 1), y = 0.5 x + noise, no forecast (the update path only; the
checksum is the final beta). Prints min and
median ns/event over REPS fresh objects (bench/_ab.py) and which ofi_fast was imported.
"""
import sys

import numpy as np

from _ab import run_ab
from ofi_fast import MultiLevelOFI, RollingOLS

mode, n, reps = sys.argv[1], int(float(sys.argv[2])), int(sys.argv[3])
rng = np.random.default_rng(7)
ts = np.cumsum(rng.integers(0, 5, n)).astype(np.int64)
if mode.startswith("mlofi"):
    L = 5
    mid = 10_000 + np.cumsum(rng.integers(-1, 2, n))
    bp = (mid[:, None] - 1 - np.arange(L)).astype(np.float64)
    ap = (mid[:, None] + 1 + np.arange(L)).astype(np.float64)
    bs = rng.integers(0, 30, (n, L)).astype(np.float64)
    az = rng.integers(0, 30, (n, L)).astype(np.float64)
    kw = {"mlofi_count": dict(window=1000), "mlofi_time": dict(window_time=1000),
          "mlofi_timegrow": dict(window_time=1000, capacity=2, grow=True)}[mode]
    run_ab(mode, n, reps, lambda: MultiLevelOFI(L, **kw),
           lambda m: m.update_many(ts, bp, bs, ap, az))
else:
    p = 3 if mode == "ols_count3" else 1
    x = rng.normal(size=(n, p))
    y = 0.5 * x.sum(axis=1) + rng.normal(size=n)
    kw = {"ols_count": dict(window=1000), "ols_count3": dict(window=1000),
          "ols_time": dict(window_time=1000),
          "ols_timegrow": dict(window_time=1000, capacity=2, grow=True)}[mode]
    run_ab(mode, n, reps, lambda: RollingOLS(n_features=p, **kw),
           lambda o: (o.update_many(x if p > 1 else x[:, 0], y, ts), o.beta)[1])
