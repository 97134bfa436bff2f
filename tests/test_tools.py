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
    c.write_text("static int __pyx_f_8ofi_fast_4_ofi_ofi_run_window(int x) {\n"
                 "  Py_INCREF(o);\n  return 0;\n}\n"
                 "static int __pyx_f_8ofi_fast_4_ofi_raise_ofi(int x) {\n"
                 "  __PYX_ERR(0, 1, L1);\n}\n")
    checked, problems = check_nogil.check([c])
    # raise_ofi is not nogil (it raises): only the kernel is checked, and its Py_INCREF found
    assert checked == 1 and len(problems) == 1 and "Py_INCREF" in problems[0]


def test_every_kernel_is_clean():
    pytest.importorskip("Cython", reason="the check cythonizes the sources (test extra)")
    names = check_nogil.nogil_names()
    assert {"ofi_run_window", "ofi_update", "rolling_push", "book_apply", "neumaier_add"} <= names
    assert check_nogil.main([]) == 0
