"""Print ns/event (min, median) and ratios from a pytest-benchmark JSON file.

    python -m pytest bench/bench_ofi.py --benchmark-only --benchmark-json=/tmp/b.json
    python tools/bench_table.py /tmp/b.json
"""

import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        n = b.get("extra_info", {}).get("events", 1)
        groups[b["group"]].append((b["name"], b["stats"]["min"] * 1e9 / n,
                                   b["stats"]["median"] * 1e9 / n))
    for group, rows in groups.items():
        best = min(r[1] for r in rows)
        print(f"\n**{group}**\n")
        print("| benchmark | ns/event min | ns/event median | ratio to fastest (min) |")
        print("|---|---:|---:|---:|")
        for name, mn, md in sorted(rows, key=lambda r: r[1]):
            print(f"| {name} | {mn:.2f} | {md:.2f} | {mn / best:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
