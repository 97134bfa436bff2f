"""Shared fixtures: the real data folder, random streams, hypothesis profiles.

The real market data lives in ../shared/data beside the repository (or where OFI_FAST_DATA
points); tests that need it skip with a clear reason when it is absent.
"""

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import ofi_fast

settings.register_profile("default", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci-short", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# a long fuzz run before a release: HYPOTHESIS_PROFILE=deep python -m pytest -q
settings.register_profile("deep", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("OFI_FAST_DATA", REPO.parent / "shared" / "data"))


def pytest_report_header(config):
    return [f"ofi_fast compiled modules from: {ofi_fast._ofi.__file__}",
            f"real data: {DATA_DIR} ({'present' if DATA_DIR.is_dir() else 'absent'})"]


def data_file(*parts) -> Path:
    """Path of a file under the shared data folder; skips the test when it is absent."""
    p = DATA_DIR.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data file not available: {p} (set OFI_FAST_DATA or add ../shared/data)")
    return p


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_quotes(rng, n, *, tick_range=3, max_size=20, integer=True, p_empty=0.0):
    """A random best-quote stream in integer ticks: (ts, bid_px, bid_sz, ask_px, ask_sz).

    Bid/ask random-walk by up to ``tick_range`` ticks with ask > bid; sizes are integers in
    [0, max_size] (so float sums are exact); with ``p_empty`` a side is empty (NaN price, 0).
    """
    mid = 1000 + np.cumsum(rng.integers(-tick_range, tick_range + 1, n))
    spread = rng.integers(1, 4, n)
    bid_px = (mid - spread // 2).astype(np.float64)
    ask_px = bid_px + spread
    bid_sz = rng.integers(0, max_size + 1, n).astype(np.float64)
    ask_sz = rng.integers(0, max_size + 1, n).astype(np.float64)
    if not integer:
        bid_sz += rng.random(n)
        ask_sz += rng.random(n)
    if p_empty:
        eb = rng.random(n) < p_empty
        ea = rng.random(n) < p_empty
        bid_px[eb], bid_sz[eb] = np.nan, 0.0
        ask_px[ea], ask_sz[ea] = np.nan, 0.0
    ts = np.cumsum(rng.integers(0, 1000, n)).astype(np.int64)
    return ts, bid_px, bid_sz, ask_px, ask_sz


_CONSUMER_SETUP = textwrap.dedent("""
    import numpy, ofi_fast
    from setuptools import setup, Extension
    from Cython.Build import cythonize
    ext = Extension("consumer", ["consumer.pyx"], include_dirs=[numpy.get_include()])
    setup(ext_modules=cythonize([ext], include_path=[ofi_fast.get_include()]),
          script_args=["build_ext", "--inplace"])
""")


@contextlib.contextmanager
def cython_consumer(folder: Path, source: str):
    """Build ``source`` as the downstream Cython module ``consumer`` in ``folder`` against
    ``ofi_fast.get_include()`` (the very ofi_fast under test: installed or the source tree)
    and import it for the block (numpy's test_extending pattern)."""
    pytest.importorskip("Cython")
    (folder / "consumer.pyx").write_text(source)
    (folder / "setup.py").write_text(_CONSUMER_SETUP)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ofi_fast.get_include(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "setup.py"], check=False, cwd=folder,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(folder))
    try:
        sys.modules.pop("consumer", None)
        import consumer
        yield consumer
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("consumer", None)


# trades4 ---------------------------------------------------------------------------------------
def special_rows(lanes, specials, ts, *columns):
    """The cases of the lane tests (one row k carries a special value or goes back in time).

    ``specials``: rows ``(field, value per column in the order of columns, ts offset)``, field
    None for a value that must be accepted, a value None to keep the clean row's, offset -1 to
    set ``ts[k] = ts[k - 1] - 1`` (skipped at k = 0). Yields, for every k in ``lanes`` and every
    special row, ``(k, field, values, ts, columns)``: fresh copies with row k changed."""
    for k in lanes:
        for field, *values, dt in specials:
            if dt and k == 0:
                continue
            t = ts.copy()
            cols = tuple(c.copy() for c in columns)
            for c, x in zip(cols, values):
                if x is not None:
                    c[k] = x
            if dt:
                t[k] = t[k - 1] - 1
            yield k, field, tuple(values), t, cols
