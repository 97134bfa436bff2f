"""The README's Python examples type-check: ``mypy --strict`` and ``pyright`` accept them with
zero errors (and pyright with zero warnings), against this package's sources and stubs. The
test extra brings pyright as basedpyright (the same checker, run in pyright's "standard" mode,
with node bundled so that it installs from PyPI alone).

Each ```python block of README.md becomes one file; mypy follows the package's imports silently
(errors are reported for the examples only), so an untyped public function, a result built at
run time (``namedtuple`` from a compiled module, ``make_dataclass``) or an attribute missing
from a stub shows up here as an error in the example that uses it.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text()
BLOCKS = [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```$", README, re.S | re.M)]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    d = tmp_path_factory.mktemp("typed_examples")
    for i, src in enumerate(BLOCKS):
        (d / f"example_{i:02d}.py").write_text(src)
    return d


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 8


def test_mypy_strict(examples):
    pytest.importorskip("mypy")
    env = dict(os.environ, MYPYPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                        "--no-incremental", "--cache-dir", os.devnull, "."], cwd=examples,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "Success: no issues found" in r.stdout, r.stdout + r.stderr


def _pyright():
    """basedpyright (the test extra: pyright's checker with node bundled, so it runs offline
    from PyPI alone) in pyright's "standard" mode, else a pyright on PATH."""
    venv_bin = os.path.dirname(sys.executable)
    for name in ("basedpyright", "pyright"):
        exe = shutil.which(name, path=venv_bin) or shutil.which(name)
        if exe is not None:
            return exe
    return None


def test_pyright(examples):
    exe = _pyright()
    if exe is None:
        pytest.skip("neither basedpyright (the test extra) nor pyright is installed")
    (examples / "pyrightconfig.json").write_text(
        '{"extraPaths": ["%s"], "pythonVersion": "3.11", "typeCheckingMode": "standard"}'
        % str(REPO).replace("\\", "/"))
    r = subprocess.run([exe, "."], cwd=examples, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 errors, 0 warnings" in r.stdout, r.stdout
