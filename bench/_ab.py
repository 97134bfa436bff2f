"""Shared timing loop of the same-run A/B scripts (bench/ab_*.py, issue 13 item 5).

Each script builds its inputs and a factory of fresh objects, then calls ``run_ab``: REPS fresh
objects, one timed call each, min and median ns/event printed with the ofi_fast that was
imported (put a copy of main built in place first on PYTHONPATH for the other side of the A/B),
and a checksum of the last result so both sides can be seen to compute the same thing.
"""
import time

import numpy as np

import ofi_fast


def run_ab(mode, n, reps, make, call):
    """Time ``call(make())`` ``reps`` times (a fresh object each); print ns/event for n events."""
    out = []
    r = None
    for _ in range(reps):
        obj = make()
        t0 = time.perf_counter_ns()
        r = call(obj)
        out.append((time.perf_counter_ns() - t0) / n)
    out.sort()
    first = r[0] if isinstance(r, tuple) else r
    check = float(np.asarray(first, dtype=np.float64).sum()) if first is not None else 0.0
    print(mode, f"min {out[0]:.2f} median {out[len(out) // 2]:.2f} ns/event",
          ofi_fast.__file__.split('/ofi_fast')[0], check)
