"""Every example of README.md runs, and what it shows is what it prints.

- ```python blocks run from the repository root (their paths are ``../shared/data/...``); a
  ``print(...)`` line annotated ``# -> TEXT`` must print exactly TEXT.
- ```console blocks: each ``$ ofi-fast ...`` (or ``$ head -N FILE``) runs in a temporary folder
  that links the data files (the README names them as a user in the data folder would); every
  output line the README shows must appear in the real output, in order (``...`` stands for
  lines left out; a block without ``...`` must match line for line). Timings (``elapsed``,
  latency and bench rows, the Python version) are compared with their numbers as wildcards.
- The ```cython block is built against the installed package and checked against the Python
  API.

No number is copied into this file: the README's own text is the expectation, so a stale
example (a changed simulator, a changed format) fails here until the README is regenerated.
"""

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA_DIR, REPO, cython_consumer

import ofi_fast

README = (REPO / "README.md").read_text()


def blocks(lang):
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```$", README, re.S | re.M)]


PY = blocks("python")
CONSOLE = blocks("console")
NEEDS_DATA = "../shared/data"


def _id(src):
    first = [ln for ln in src.splitlines() if ln.strip() and not ln.startswith(("import",
                                                                              "from"))]
    return (first[0] if first else src.splitlines()[0])[:40]


ANNOTATION = re.compile(r"^(\s*)print\((.*)\)\s+# -> (.*)$")


def run_python(src):
    """Exec ``src``; returns [(line number, expected, printed)] for its annotated prints."""
    checks = []
    out_lines = {}
    lines = src.splitlines()
    for i, ln in enumerate(lines):
        m = ANNOTATION.match(ln)
        if m:
            checks.append((i + 1, m.group(3)))
            lines[i] = f"{m.group(1)}__print_at__({i + 1}, {m.group(2)})"

    def print_at(lineno, *args, **kw):
        buf = io.StringIO()
        print(*args, file=buf, **kw)
        out_lines[lineno] = buf.getvalue().rstrip("\n")
        print(*args, **kw)
    ns = {"__name__": "__readme__", "__print_at__": print_at}
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile("\n".join(lines), "<README>", "exec"), ns)
    finally:
        os.chdir(cwd)
    return [(n, exp, out_lines.get(n)) for n, exp in checks]


@pytest.mark.parametrize("src", PY, ids=[_id(s) for s in PY])
def test_python_example(src):
    if NEEDS_DATA in src and not DATA_DIR.is_dir():
        pytest.skip(f"real data not available: {DATA_DIR}")
    checks = run_python(src)
    bad = [(n, exp, got) for n, exp, got in checks if got != exp]
    assert not bad, "README line: expected -> printed\n" + "\n".join(
        f"  {n}: {exp!r} -> {got!r}" for n, exp, got in bad)


def test_every_python_example_checks_something():
    assert all(ANNOTATION.search(src) or "print(" in src for src in PY)
    assert sum(len(re.findall(r"# -> ", src)) for src in PY) >= 20


# ---------------------------------------------------------------- console examples

VOLATILE = ("elapsed", "OFI.update", "TradeFlow.update", "BookOFI.update_many", "empty call",
            "OFI()", "OFI(window", "RollingSum(", "l1_ofi (batch)", "ofi-fast bench:", "p50")


def sessions(block):
    """[(command, [README output lines])] of a console block."""
    out = []
    for ln in block.splitlines():
        if ln.startswith("$ "):
            out.append((ln[2:], []))
        elif out:
            out[-1][1].append(ln)
    return out


def pattern(line):
    """A README output line as a regex: exact, or with numbers as wildcards in timings."""
    if any(v in line for v in VOLATILE) or re.fullmatch(r"\s*\([\d.]+ s\)", line):
        parts = re.split(r"[-+]?[\d][\d.,]*", line)
        body = r"[-+]?[\d][\d.,]*".join(re.escape(p) for p in parts)
        return re.compile(re.sub(r"(\\ )+", r"\\s+", body) + r"\s*$")
    return re.compile(re.escape(line.rstrip()) + r"\s*$")


@pytest.fixture(scope="module")
def data_cwd(tmp_path_factory):
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not available: {DATA_DIR}")
    d = tmp_path_factory.mktemp("readme")
    for p in list(DATA_DIR.iterdir()) + list((DATA_DIR / "lobster").iterdir()):
        if not (d / p.name).exists():
            os.symlink(p, d / p.name)
    return d


def run_console(cmd, cwd):
    argv = shlex.split(cmd)
    if argv[0] == "head":
        n = int(argv[1].lstrip("-"))
        return 0, "\n".join((cwd / argv[2]).read_text().splitlines()[:n]) + "\n", ""
    assert argv[0] == "ofi-fast", cmd
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "ofi_fast", *argv[1:]], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout, r.stderr


def check_output(cmd, shown, code, stdout, stderr):
    real = (stdout + stderr).splitlines() if code else stdout.splitlines()
    want = [ln for ln in shown if ln.strip()]
    elided = any(ln.strip() == "..." for ln in want)
    want = [ln for ln in want if ln.strip() != "..."]
    got = [ln for ln in real if ln.strip()]
    i = 0
    for w in want:
        rx = pattern(w)
        while i < len(got) and not rx.match(got[i]):
            if not elided:
                pytest.fail(f"$ {cmd}\nREADME: {w!r}\nprinted: {got[i]!r}")
            i += 1
        if i == len(got):
            pytest.fail(f"$ {cmd}\nREADME line not printed (in this order): {w!r}\n"
                        f"output:\n{chr(10).join(real)}")
        i += 1
    if not elided:
        assert i == len(got), f"$ {cmd}: printed more than the README shows: {got[i:]}"


CASES = [(cmd, shown) for b in CONSOLE for cmd, shown in sessions(b)]


@pytest.mark.parametrize("cmd, shown", CASES, ids=[c[:60] for c, _ in CASES])
def test_console_example(cmd, shown, data_cwd):
    code, stdout, stderr = run_console(cmd, data_cwd)
    errors = [ln for ln in shown if ln.startswith("ofi-fast: error:")]
    assert code == (2 if errors else 0), stderr
    if errors:
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    check_output(cmd, shown, code, stdout, stderr)


def test_console_examples_cover_every_command():
    cmds = {shlex.split(c)[1] for c, _ in CASES if c.startswith("ofi-fast")}
    assert {"analyze", "stream", "bench", "cks", "multilevel"} <= cmds


# ---------------------------------------------------------------- the cimport example

@pytest.fixture(scope="module")
def readme_consumer(tmp_path_factory):
    (src,) = blocks("cython")
    with cython_consumer(tmp_path_factory.mktemp("readme_consumer"), src) as mod:
        yield mod


def test_cython_example(readme_consumer):
    from ofi_fast.simulate import simulate
    sim = simulate(5_000, seed=4, levels=1)
    bp, bs, ap, az = sim.best()
    o = ofi_fast.OFI(window=100)
    e = np.empty(5_000)
    n, value = readme_consumer.run(o, sim.ts, bp, bs, ap, az, e)
    ref = ofi_fast.OFI(window=100)
    np.testing.assert_array_equal(e, ref.update_many(sim.ts, bp, bs, ap, az))
    assert n == 5_000 and value == ref.value
    empty = np.zeros(0)
    assert readme_consumer.run(ofi_fast.OFI(), np.zeros(0, np.int64), empty, empty, empty,
                               empty, empty) == (0, 0.0)
    bad = bs.copy()
    bad[7] = -1.0
    with pytest.raises(ofi_fast.NegativeSizeError, match=r"bid_sz\[7\]"):
        readme_consumer.run(ofi_fast.OFI(), sim.ts, bp, bad, ap, az, np.empty(5_000))
