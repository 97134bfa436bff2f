"""tools/check_nogil.py: every noexcept nogil function compiles to C without the Python C-API."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import check_nogil  # noqa: E402


def test_mangled_names_are_decoded():
    assert check_nogil.function_name("__pyx_f_8ofi_fast_4_ofi_ofi_run_window") == "ofi_run_window"
    assert check_nogil.function_name("__pyx_f_8ofi_fast_4_ofi_3OFI_push") == "push"
    assert check_nogil.function_name("__pyx_f_8ofi_fast_5_ring_rolling_push") == "rolling_push"


def test_a_python_call_in_a_nogil_body_is_reported(tmp_path):
    c = tmp_path / "_fake.c"
    c.write_text("static int __pyx_f_8ofi_fast_4_ofi_ofi_run(int x) {\n"
                 "  Py_INCREF(o);\n  return 0;\n}\n"
                 "static int __pyx_f_8ofi_fast_4_ofi_raise_ofi(int x) {\n"
                 "  __PYX_ERR(0, 1, L1);\n}\n")
    checked, problems = check_nogil.check([c])
    # raise_ofi is not nogil (it raises): only the kernel is checked, and its Py_INCREF found
    assert checked == 1 and len(problems) == 1 and "Py_INCREF" in problems[0]


def test_every_kernel_is_clean():
    pytest.importorskip("Cython", reason="the check cythonizes the sources (test extra)")
    names = check_nogil.nogil_names()
    assert {"ofi_run", "ofi_update", "rolling_push", "book_apply", "neumaier_add"} <= names
    assert check_nogil.main([]) == 0


# --- tools/check_branches.py: no data-dependent conditional jump in the kernels' inner loops
import shutil  # noqa: E402

import check_branches  # noqa: E402

needs_gcc = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("objdump")),
                               reason="the check compiles with gcc and reads objdump -d")


def _insns(lines):
    out = []
    for line in lines:
        addr, op, *args = line.split()
        out.append(check_branches.Insn(int(addr, 16), op, " ".join(args)))
    return out


def test_inner_loops_and_their_extra_jumps_are_found():
    # a loop 10-30 holding a forward conditional jump, nested in a loop 0-40
    insns = _insns(["0 mov x", "10 cmp a", "14 jb 20 <f+0x20>", "18 add b", "20 add c",
                    "30 jne 10 <f+0x10>", "38 sub d", "40 jne 0 <f+0x0>", "48 ret"])
    assert check_branches.inner_loops(insns) == [(0x10, 0x30)]
    found = check_branches.findings("f", insns)
    assert len(found) == 1 and "14: jb" in found[0]
    # the same loop without the forward jump is clean; a function without a loop is not
    assert check_branches.findings("f", [i for i in insns if i.addr != 0x14]) == []
    assert check_branches.findings("g", _insns(["0 mov x", "4 ret"])) == ["g: no loop found"]


@needs_gcc
def test_the_branchy_negative_control_is_flagged(tmp_path):
    found = check_branches.negative_control(tmp_path)
    assert found and "conditional jump" in found[0]


@needs_gcc
def test_every_named_kernel_is_branch_free():
    pytest.importorskip("Cython", reason="the check cythonizes the sources (test extra)")
    assert check_branches.main([]) == 0
