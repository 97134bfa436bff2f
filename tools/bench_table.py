"""Print ns/event (min, median) and ratios from a pytest-benchmark JSON file.

    python -m pytest bench/bench_ofi.py --benchmark-only --benchmark-json=/tmp/b.json
    python tools/bench_table.py /tmp/b.json

Per group: each row's ratio to the fastest row, and, where the suite tagged rows with a role
(bench/conftest.py:per_event), to the fastest "limit" row (a branch-free C loop of the same
work) and to the fastest "peer" row (numba, numpy), all from the minima of the same run.
"""

import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        n = info.get("events", 1)
        groups[b["group"]].append((b["name"], b["stats"]["min"] * 1e9 / n,
                                   b["stats"]["median"] * 1e9 / n, info.get("role")))
    for group, rows in groups.items():
        best = min(r[1] for r in rows)
        limit = min((r[1] for r in rows if r[3] == "limit"), default=None)
        peer = min((r[1] for r in rows if r[3] == "peer"), default=None)
        print(f"\n**{group}**\n")
        print("| benchmark | ns/event min | ns/event median | / fastest | / limit | / peer |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, mn, md, _ in sorted(rows, key=lambda r: r[1]):
            lim = f"{mn / limit:.2f}" if limit else ""
            pr = f"{mn / peer:.2f}" if peer else ""
            print(f"| {name} | {mn:.2f} | {md:.2f} | {mn / best:.2f} | {lim} | {pr} |")


if __name__ == "__main__":
    main(sys.argv[1])
