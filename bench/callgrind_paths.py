"""Instructions per event of the streaming and windowed paths, counted by callgrind.

    python bench/callgrind_paths.py MODE [N]      # runs itself under valgrind, prints Ir/event
    python bench/callgrind_paths.py all

Instruction counts repeat exactly for the same build and inputs whatever the machine's load,
so they compare two builds where timings on 2 shared cores cannot. Each mode runs one
workload and counts the instructions inside one compiled function (callgrind
``--toggle-collect``, the exact symbol: a glob that matches a function and its callee toggles
twice). Inputs: random best quotes (steps of one tick, sizes 1..499) and trades at ts steps of
1..2e6 ns, a 1 s time window where the mode has one. Run from outside the repository root if
the installed build is the one to count.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

# mode: (symbol counted, default N)
MODES = {
    "ofi_update": ("__pyx_pw_8ofi_fast_4_ofi_3OFI_5update", 100_000),
    "floor": ("__pyx_pw_8ofi_fast_4_ofi_10_EmptyCall_1update", 100_000),
    "tradeflow_update": ("__pyx_f_8ofi_fast_7_trades_9TradeFlow_update", 100_000),
    "ofi_many_time": ("__pyx_pf_8ofi_fast_4_ofi_3OFI_6update_many", 1_000_000),
    "tradeflow_many_time": ("__pyx_pf_8ofi_fast_7_trades_9TradeFlow_8update_many", 1_000_000),
    "tradeflow_many_count": ("__pyx_pf_8ofi_fast_7_trades_9TradeFlow_8update_many", 1_000_000),
    "ols_many_time": ("__pyx_pf_8ofi_fast_7_impact_10RollingOLS_6update_many", 1_000_000),
    "mlofi_many_time": ("__pyx_pf_8ofi_fast_4_ofi_13MultiLevelOFI_6update_many", 300_000),
}


def workload(mode, n):
    import ofi_fast
    from ofi_fast._ofi import _EmptyCall

    rng = np.random.default_rng(7)
    ts = np.cumsum(rng.integers(1, 2_000_000, n)).astype(np.int64)
    bp = 100 + np.cumsum(rng.integers(-1, 2, n)) * 0.01
    ap = bp + 0.01 * rng.integers(1, 3, n)
    bs = rng.integers(1, 500, n).astype(float)
    az = rng.integers(1, 500, n).astype(float)
    side = rng.choice(np.array([-1, 1], dtype=np.int8), n)
    sec = 1_000_000_000
    if mode in ("ofi_update", "floor"):
        upd = (ofi_fast.OFI(window_time=sec) if mode == "ofi_update" else _EmptyCall()).update
        t, b, q, a, z = (x.tolist() for x in (ts, bp, bs, ap, az))
        for i in range(n):
            upd(t[i], b[i], q[i], a[i], z[i])
    elif mode == "tradeflow_update":
        upd = ofi_fast.TradeFlow(window_time=sec).update
        t, p, q, s = ts.tolist(), bp.tolist(), bs.tolist(), side.tolist()
        for i in range(n):
            upd(t[i], p[i], q[i], s[i])
    elif mode == "ofi_many_time":
        ofi_fast.OFI(window_time=sec).update_many(ts, bp, bs, ap, az)
    elif mode == "tradeflow_many_time":
        ofi_fast.TradeFlow(window_time=sec).update_many(ts, bp, bs, side=side)
    elif mode == "tradeflow_many_count":
        ofi_fast.TradeFlow(window=1000).update_many(ts, bp, bs, side=side)
    elif mode == "ols_many_time":
        ofi_fast.RollingOLS(window_time=sec).update_many(bs - az, bp - ap, ts=ts)
    elif mode == "mlofi_many_time":
        lv = np.arange(5) * 0.01
        ofi_fast.MultiLevelOFI(5, window_time=sec).update_many(
            ts, bp[:, None] - lv, np.repeat(bs[:, None], 5, 1),
            ap[:, None] + lv, np.repeat(az[:, None], 5, 1))


def count(mode, n):
    """Instructions per event inside MODES[mode]'s symbol (runs valgrind on this file)."""
    symbol = MODES[mode][0]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        f"--toggle-collect={symbol}", sys.executable, __file__, "--run",
                        mode, str(n)], check=True, capture_output=True)
        for line in open(out):
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1]) / n
    raise RuntimeError("no totals in the callgrind output")


def main(argv):
    if argv[:1] == ["--run"]:
        workload(argv[1], int(argv[2]))
        return
    modes = list(MODES) if argv[:1] == ["all"] else argv[:1]
    for mode in modes:
        n = int(argv[1]) if len(argv) > 1 else MODES[mode][1]
        print(f"{mode:24s} {n:>9,d} events  {count(mode, n):8.1f} instructions/event")


if __name__ == "__main__":
    main(sys.argv[1:])
