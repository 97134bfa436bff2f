"""Before/after of issue 12: the analysis of N simulated events (5 levels, 1M-event chunks,
simulation excluded), the old in-CLI pipeline (cli.BarBuilder + cli.summarize, from a copy of
main's ofi_fast/cli.py) vs pipeline.analyze, alternating in one run.

Run: git show cc87849:ofi_fast/cli.py > /tmp/cli_main.py
     python bench/analyze_vs_main.py 10000000 /tmp/cli_main.py
"""
import gc
import importlib.util
import statistics
import sys
import time

from ofi_fast import feeds, pipeline

spec = importlib.util.spec_from_file_location(
    "cli_main", sys.argv[2] if len(sys.argv) > 2 else "/tmp/cli_main.py")
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
EVERY = 10 * 10**9
t = time.perf_counter()
src = feeds.open(None, events=N, seed=0, levels=5, chunk_rows=1_000_000)
chunks = list(src.chunks())
print(f"simulated {N:,} events in {time.perf_counter() - t:.1f} s", flush=True)

def run_old():
    bb = old.BarBuilder(EVERY)
    for c in chunks:
        bb.add(c)
    return old.summarize(bb.table(), EVERY, bb.n_events, bb=bb)

def run_new():
    s = feeds.Source("sim", lambda: iter(chunks), fmt="simulator", tick_size=0.01, unit="rows")
    return pipeline.analyze(s, every=10.0).summary

res = {"main (cli.BarBuilder + cli.summarize)": [], "branch (pipeline.analyze)": []}
pairs = list(zip(res, (run_old, run_new)))
for r in range(8):                       # alternate the order: neither side always runs second
    for name, fn in (pairs if r % 2 == 0 else pairs[::-1]):
        gc.collect()
        t = time.perf_counter()
        fn()
        res[name].append(time.perf_counter() - t)
so, sn = run_old(), run_new()
# same numbers (dmid is now on the half-tick grid: R^2 may differ in the last digits)
assert abs(so["r2"] - sn["r2"]) < 1e-12 and abs(so["beta"] / sn["beta"] - 1) < 1e-12
assert so["bars"] == sn["bars"]
for name, v in res.items():
    print(f"{name:40s} min {min(v)*1e3:8.1f} ms  median {statistics.median(v)*1e3:8.1f} ms  "
          f"({min(v)/N*1e9:.1f} ns/event min)")
mo, mn = min(res["main (cli.BarBuilder + cli.summarize)"]), min(res["branch (pipeline.analyze)"])
do, dn = (statistics.median(v) for v in res.values())
print(f"ratio branch/main: min {mn/mo:.3f}, median {dn/do:.3f}")
