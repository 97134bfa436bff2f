"""``ofi_fast.batch`` on a LocalCluster (issue 15): scaling, scheduler overhead, worker memory.

Run: ``python bench/bench_batch.py [--symbols 10 --days 4 --events 250000 --repeat 3]``
(a script, not a pytest suite: each measurement starts its own cluster). It prints the
tables of bench/RESULTS.md "issue 15":

1. wall time of ``batch.run`` on the same symbol-days (simulated LOBSTER level-1 zips, written
   once into a cache folder) with 1 and with 2 worker processes, ``force=True`` so every input
   is a task, each repeated; cluster start-up excluded (the clients are warm); then the same
   days unzipped into message + orderbook CSV pairs (batch tasks read without the readers'
   block-ahead thread, so a task on a zip uses one core, as on plain CSV);
2. scheduler overhead per task: (a) 400 empty tasks submitted and gathered, wall / task;
   (b) in the batch run itself, (wall x workers - sum of the workers' task times) / tasks;
3. peak RSS of one worker process (``ru_maxrss``, a fresh cluster per row) analysing days of
   two lengths under several ``chunk_rows``: bounded by the chunk, not by the day.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ofi_fast import batch
from ofi_fast.dataset import simulate_dataset


def _cluster(n):
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    client = Client(cluster)
    client.run(batch._warm_up)
    return cluster, client


def _noop(i):
    return i


def _rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _dataset(root: Path, symbols, days, events, seed=0):
    d = root / f"s{symbols}_d{days}_e{events}_l1_seed{seed}"
    if not (d / "params.json").exists():
        t = time.perf_counter()
        simulate_dataset(d, symbols, days, levels=1, events=events, seed=seed)
        print(f"  (dataset {d.name} written in {time.perf_counter() - t:.1f} s)",
              file=sys.stderr)
    return sorted(str(p) for p in d.glob("*.zip"))


def _plain(paths, root: Path):
    """The same days as plain message + orderbook CSV pairs (no zip inflation), cached."""
    import zipfile
    d = root / (Path(paths[0]).parent.name + "_csv")
    d.mkdir(exist_ok=True)
    out = []
    for p in paths:
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if n.endswith(".csv")]
            if not all((d / n).exists() for n in names):
                z.extractall(d, names)
        out.append(str(d / next(n for n in names if "_message_" in n)))
    return sorted(out)


def scaling(paths, events, repeat, tmp):
    """Both clusters live side by side and the runs alternate (1, 2, 1, 2, ...), so a change
    of the machine's load during the measurement hits both alike."""
    clusters = {n: _cluster(n) for n in (1, 2)}
    walls = {1: [], 2: []}
    tasks = {1: [], 2: []}
    cpus = {1: [], 2: []}
    over = {1: [], 2: []}
    empty = []
    try:
        for n, (_, client) in clusters.items():
            batch.run(paths[:2 * n], tmp / f"warm{n}", client=client)   # client-side imports
        for _ in range(repeat):
            for n, (_, client) in clusters.items():
                r = batch.run(paths, tmp / f"out{n}", client=client, force=True)
                assert r.done == len(paths) and r.failed == 0
                walls[n].append(r.seconds)
                tasks[n].extend(r.task_seconds)
                cpus[n].extend(r.task_cpu_seconds)
                over[n].append((r.seconds * n - sum(r.task_seconds)) / len(paths))
            client = clusters[2][1]
            t = time.perf_counter()
            client.gather(client.map(_noop, range(400), pure=False))
            empty.append((time.perf_counter() - t) / 400)
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
    med = statistics.median
    kind = "zips" if paths[0].endswith(".zip") else "plain CSV pairs"
    print(f"\n### scaling: {len(paths)} symbol-days of {events:,} events (LOBSTER level 1 "
          f"{kind}), repeat {repeat}, runs alternating\n")
    print("| workers | wall s min | median | task wall s median | task CPU s median | "
          "ns/event (task wall median) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (1, 2):
        print(f"| {n} | {min(walls[n]):.2f} | {med(walls[n]):.2f} | {med(tasks[n]):.3f} | "
              f"{med(cpus[n]):.3f} | {med(tasks[n]) / events * 1e9:.0f} |")
    print(f"\nspeed-up 2 vs 1 worker: min {min(walls[1]) / min(walls[2]):.2f}x, median "
          f"{med(walls[1]) / med(walls[2]):.2f}x; per repeat "
          + ", ".join(f"{a / b:.2f}x" for a, b in zip(walls[1], walls[2])))
    print(f"\nscheduler overhead: empty task {min(empty) * 1e3:.2f} ms min, "
          f"{med(empty) * 1e3:.2f} ms median (400 tasks, 2 workers); in the batch "
          f"run (wall x workers - task time) / tasks: 1 worker "
          f"{med(over[1]) * 1e3:.1f} ms, 2 workers {med(over[2]) * 1e3:.1f} ms median per task")
    return med(tasks[1]), med(cpus[1])


def memory(root, tmp, lengths, chunks):
    print("\n### peak RSS of one worker (MiB): rows = events per day, columns = chunk_rows\n")
    print("| events/day | idle worker | " + " | ".join(f"chunk {c:,}" for c in chunks) + " |")
    print("|---:|---:|" + "---:|" * len(chunks))
    for n in lengths:
        paths = _dataset(root, 1, 1, n)
        cells = []
        idle = None
        for c in chunks:
            cluster, client = _cluster(1)
            try:
                idle = min(idle or 1e18, next(iter(client.run(_rss_kib).values())))
                r = batch.run(paths, tmp / f"mem{n}_{c}", client=client, force=True,
                              chunk_rows=c)
                assert r.done == 1, r.errors
                cells.append(next(iter(client.run(_rss_kib).values())))
            finally:
                client.close()
                cluster.close()
        print(f"| {n:,} | {idle / 1024:.0f} | " + " | ".join(f"{v / 1024:.0f}" for v in cells)
              + " |")


def main(argv=None):
    logging.getLogger("distributed").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--events", type=int, default=250_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ofi_fast_bench_batch"))
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-plain", action="store_true",
                   help="skip the scaling run on the same days unzipped")
    a = p.parse_args(argv)
    root = Path(a.cache)
    root.mkdir(parents=True, exist_ok=True)
    print(f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    paths = _dataset(root, a.symbols, a.days, a.events)
    with tempfile.TemporaryDirectory() as t:
        task, cpu = scaling(paths, a.events, a.repeat, Path(t))
        print(f"load average after: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if not a.no_plain:
            scaling(_plain(paths, root), a.events, a.repeat, Path(t))
            print(f"load average after: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
        per_event = min(task, cpu) / a.events      # CPU time when the machine is shared
        for n_ev in (a.events, 1_000_000):
            hours = 10_500 * per_event * n_ev / 100 / 3600
            print(f"\nestimate: 10,500 symbol-days of {n_ev:,} events on 100 workers: "
                  f"{10_500 / 100:.0f} tasks per worker x {per_event * n_ev:.2f} s = "
                  f"{hours * 60:.1f} min (+ the scheduler's ~ms per task)")
        if not a.no_memory:
            memory(root, Path(t), (250_000, 2_000_000), (50_000, 250_000, 1_000_000))


if __name__ == "__main__":
    main()
