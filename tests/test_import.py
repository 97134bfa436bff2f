"""`import ofi_fast`: the version literal matches pyproject.toml, and the import loads numpy
and the package only (its cost is measured in bench/bench_import.py, not here)."""

import re
import subprocess
import sys
from pathlib import Path

import ofi_fast

ROOT = Path(__file__).resolve().parent.parent


def test_version_literal_equals_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    project = text[text.index("[project]"):]
    version = re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1)
    assert ofi_fast.__version__ == version


def test_import_loads_no_optional_or_metadata_module():
    code = ("import sys; import numpy; before = set(sys.modules); import ofi_fast; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    new = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.split()
    assert "ofi_fast._ofi" in new            # the probe does see what the import loads
    banned = ("importlib.metadata", "pandas", "polars", "pyarrow", "matplotlib", "tqdm",
              "dask", "websockets", "orjson", "numba", "pathlib", "email", "zipfile")
    assert [m for m in new if m.split(".")[0] in banned or m in banned] == []
    assert all(m.startswith(("ofi_fast", "_cython", "cython_runtime")) for m in new), new
