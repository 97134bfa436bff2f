"""Fail when a ``noexcept nogil`` function's generated C touches the Python C-API.

    python tools/check_nogil.py [--c-dir DIR]

Every ``cdef ... noexcept nogil`` function declared in ofi_fast/*.pyx and *.pxd is a kernel or
a helper of one: it must compile to plain C (no reference counting, no exception machinery, no
GIL re-acquisition). The script cythonizes each module into a temporary folder, with setup.py's release
directives (or reads the
``.c`` files of an in-place build with ``--c-dir``), finds the C definition of every such
function and reports each Python C-API token in its body. Exit status 1 on a finding, 0 when
all kernels are clean; the summary line says how many function bodies were checked.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ofi_fast"

# Signatures: "cdef [inline] <type> name(args) noexcept nogil" (args may span lines).
NOGIL_DEF = re.compile(r"cdef\s+(?:inline\s+)?[\w\s\*\[\]]+?\b(\w+)\s*\(([^()]|\([^()]*\))*\)"
                       r"\s*noexcept\s+nogil")
# Python C-API use that may not appear in a nogil function body.
FORBIDDEN = re.compile(
    r"\b(PyObject|Py_X?INCREF|Py_X?DECREF|__Pyx_X?INCREF|__Pyx_X?DECREF|__Pyx_X?GOTREF|"
    r"__Pyx_X?GIVEREF|PyGILState_Ensure|__Pyx_PyGILState_Ensure|__Pyx_RefNannySetupContext|"
    r"__Pyx_AddTraceback|__PYX_ERR|__Pyx_Raise|__Pyx_ErrFetch|PyErr_\w+|__Pyx_PyObject_\w+)\b")


def nogil_names() -> set[str]:
    names = set()
    for path in sorted(PACKAGE.glob("_*.p[yx][xd]")):
        names.update(m.group(1) for m in NOGIL_DEF.finditer(path.read_text()))
    return names


def function_name(mangled: str) -> str | None:
    """``__pyx_f_8ofi_fast_4_ofi_3OFI_push`` -> ``push``: skip the length-prefixed module and
    class components, return what follows."""
    s = mangled[len("__pyx_f_"):]
    i = 0
    while i < len(s) and s[i].isdigit():
        j = i
        while s[j].isdigit():
            j += 1
        i = j + int(s[i:j])
        if i >= len(s) or s[i] != "_":
            return None
        i += 1
    return s[i:] or None


def bodies(c_source: str):
    """(function name, body) of every C function definition ``static ... __pyx_f_...(...) {``."""
    lines = c_source.split("\n")
    for k, line in enumerate(lines):
        if not (line.startswith("static ") and line.endswith("{")):
            continue
        m = re.search(r"\b(__pyx_f_\w+)\(", line)
        if not m:
            continue
        name = function_name(m.group(1))
        end = k + 1
        while end < len(lines) and lines[end] != "}":
            end += 1
        yield name, m.group(1), "\n".join(lines[k + 1:end])


def check(c_files) -> tuple[int, list[str]]:
    names = nogil_names()
    checked, problems = 0, []
    for c_file in c_files:
        for name, mangled, body in bodies(Path(c_file).read_text()):
            if name not in names:
                continue
            checked += 1
            for m in sorted(set(FORBIDDEN.findall(body))):
                problems.append(f"{Path(c_file).name}: {mangled} ({name}) uses {m}")
    return checked, problems


def release_directives() -> dict:
    """setup.py's compiler directives for a release build (OFI_FAST_DEBUG unset)."""
    tree = ast.parse((PACKAGE.parent / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "directives":
            return eval(compile(ast.Expression(node.value), "setup.py", "eval"), {"DEBUG": False})
    raise SystemExit("check_nogil: no `directives = {...}` in setup.py")


def cythonize_to(folder: Path) -> list[Path]:
    out = []
    d = release_directives()
    flags = ",".join(f"{k}={v}" for k, v in d.items() if k != "language_level")
    for pyx in sorted(PACKAGE.glob("_*.pyx")):
        target = folder / (pyx.stem + ".c")
        subprocess.run([sys.executable, "-m", "cython", f"-{d.get('language_level', 3)}",
                        "-X", flags, "-I", str(PACKAGE.parent), str(pyx), "-o", str(target)],
                       check=True, capture_output=True)
        out.append(target)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--c-dir", type=Path, help="read the .c files here instead of cythonizing")
    args = ap.parse_args(argv)
    if args.c_dir:
        checked, problems = check(sorted(args.c_dir.glob("_*.c")))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            checked, problems = check(cythonize_to(Path(tmp)))
    for p in problems:
        print(p)
    print(f"check_nogil: {checked} nogil function bodies checked, {len(problems)} problems")
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
