"""`import ofi_fast` against `import numpy`, each in a fresh interpreter (issue 13 target:
at most 40 ms more than numpy).

    python -m pytest bench/bench_import.py --benchmark-only --benchmark-columns=min,median
"""

import subprocess
import sys

import pytest


def _fresh(stmt):
    subprocess.run([sys.executable, "-c", stmt], check=True)


@pytest.mark.benchmark(group="import (fresh interpreter, startup included)")
@pytest.mark.parametrize("stmt", ["pass", "import numpy", "import ofi_fast"])
def test_import(benchmark, stmt):
    benchmark.pedantic(_fresh, args=(stmt,), rounds=15, warmup_rounds=2)
