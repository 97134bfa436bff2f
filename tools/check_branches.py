"""Fail when a named kernel's inner loop contains a data-dependent conditional jump.

    python tools/check_branches.py                 # the package's kernels and bench/cloop.c
    python tools/check_branches.py --show NAME     # print NAME's disassembly with its loops

A price comparison or a validity test compiled into a conditional jump mispredicts on real
quotes (about 0.6 times per event on a random walk, ~5 ns each); the kernels compute such
tests as masks and selects instead. This script checks what the compiler made of them: it
compiles each source with the flags of a release build (gcc -O2, setup.py's Cython directives
for the .pyx; bench/cloop.c, the benchmarks' C limit, also at -O3, since the benchmarks build
both and compare with the faster), disassembles the named functions with ``objdump -d`` and finds their loops (a
jump to an address at or before itself closes a loop running from the target to the jump).
In every innermost loop (one that contains no other loop) it allows exactly one conditional
jump, the loop's own test (its back edge, or its exit when the compiler rotates the loop); any
other conditional jump there is a finding. Outer loops may branch (once per block of events,
e.g. "the block's validity mask says a row is bad").

Kernels are compiled with ``-fno-inline-functions-called-once -fno-inline-small-functions``
so that each named function keeps its own symbol; the ``inline`` helpers of the .pxd files
(``ofi_l1_event``, ``neumaier_add``) are still inlined into them, so they are checked inside
every kernel that uses them.

Exit status 1 on a finding, on a named function that is missing or has no loop, and when the
negative control (a deliberately branchy loop, ``NEGATIVE_CONTROL``) is not flagged.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ofi_fast"
CFLAGS = ["-O2", "-fPIC", "-fno-inline-functions-called-once", "-fno-inline-small-functions"]

# (source, [function names]): the C-level name of each kernel whose inner loops must be
# branch-free. Cython functions are given by their Cython name (mangled names are matched by
# suffix); C functions by their C name.
KERNELS: dict[str, list[str]] = {
    # OFI.update_many's fused pass (the time-order check and a count window's sum inside it)
    # (each vector pass in both widths: _w4 = 4 lanes under AVX2, _w2 = 2 lanes)
    "ofi_fast/_ofi.pyx": [f"{k}_{w}" for k in ("ofi_l1_pairs", "ofi_l1_pairs_counted",
                                               "ofi_l1_pairs_total", "ofi_um_total",
                                               "ofi_um_plain", "ofi_um_fill", "ofi_um_full")
                          for w in ("w2", "w4")] + ["ofi_count_block", "ofi_time_block"],
    # VPIN's kernel is C in _trades.pyx's extern block
    "ofi_fast/_trades.pyx": ["_classify_tick", "_classify_quote", "_classify_lee_ready",
                             "_classify_emo", "_tf_plain", "_tf_count",
                             "_tf_time", "ofi_vpin_fill_half", "ofi_vpin_fill_side",
                             "ofi_vpin_fill_frac",
                             # helper edge5: TradeFlow.update_many's block check, C in the
                             # extern block (both target clones by their full symbol;
                             # _tf_validate is its loop-free wrapper)
                             "trd_tf_validate.default", "trd_tf_validate.avx2"],
    "ofi_fast/_ring.pyx": ["_rs_clean", "_rs_plain", "_rs_count"],
    "ofi_fast/_impact.pyx": ["bars_clock_fast", "_segment_fast", "_event_bars_fast"],
    # the limits: the same work as the kernels, without validation
    "bench/cloop.c": ["l1_ofi_c", "l1_ofi_c_v2", "update_many_count_c", "update_many_time_c",
                      "classify_tick_c", "classify_lee_ready_c", "tradeflow_plain_c",
                      "tradeflow_count_c", "tradeflow_time_c", "update_many_plain_c",
                      "update_many_count_same_c"],
}

# Sources also checked at these levels: the benchmarks build bench/cloop.c at -O2 and -O3 and
# report the faster, so both builds must be the branch-free limit.
EXTRA_OPT: dict[str, list[str]] = {"bench/cloop.c": ["-O3"]}

# A loop the check must flag: CKS eq. 10 written with ifs (gcc -O2 turns them into jumps).
NEGATIVE_CONTROL = r"""
void branchy_l1_ofi(const double *bp, const double *bs, const double *ap, const double *az,
                    double *out, long n)
{
    for (long i = 1; i < n; i++) {
        double bid = 0.0, ask = 0.0;
        if (bp[i] >= bp[i - 1]) bid = bs[i];
        if (bp[i] <= bp[i - 1]) bid -= bs[i - 1];
        if (ap[i] >= ap[i - 1]) ask = az[i - 1];
        if (ap[i] <= ap[i - 1]) ask -= az[i];
        out[i] = bid + ask;
    }
}
"""

INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
FUNC = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
TARGET = re.compile(r"^([0-9a-f]+)\b")


@dataclass
class Insn:
    addr: int
    op: str
    args: str

    @property
    def is_jump(self) -> bool:
        return self.op.startswith("j")

    @property
    def is_conditional(self) -> bool:
        return self.is_jump and not self.op.startswith("jmp")

    @property
    def target(self) -> int | None:
        m = TARGET.match(self.args)
        return int(m.group(1), 16) if (self.is_jump and m) else None

    def __str__(self) -> str:
        return f"{self.addr:6x}: {self.op} {self.args}"


def disassemble(obj: Path) -> dict[str, list[Insn]]:
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)], check=True,
                          capture_output=True, text=True).stdout
    funcs: dict[str, list[Insn]] = {}
    cur = None
    for line in text.splitlines():
        m = FUNC.match(line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = INSN.match(line)
        if m and cur is not None:
            cur.append(Insn(int(m.group(1), 16), m.group(2), m.group(3)))
    return funcs


def inner_loops(insns: list[Insn]) -> list[tuple[int, int]]:
    """(start, end) address ranges of the innermost loops: a backward jump closes a loop."""
    lo, hi = insns[0].addr, insns[-1].addr
    loops = [(i.target, i.addr) for i in insns
             if i.is_jump and i.target is not None and lo <= i.target <= i.addr <= hi]
    return sorted({(a, b) for a, b in loops
                   if not any((c, d) != (a, b) and a <= c and d <= b for c, d in loops)})


def findings(name: str, insns: list[Insn]) -> list[str]:
    """The problems of one function: no loop, or extra conditional jumps in an inner loop."""
    loops = inner_loops(insns)
    if not loops:
        return [f"{name}: no loop found"]
    out = []
    for a, b in loops:
        cond = [i for i in insns if a <= i.addr <= b and i.is_conditional]
        if len(cond) > 1:
            out.append(f"{name}: inner loop {a:x}-{b:x} has {len(cond) - 1} conditional "
                       f"jump(s) besides its own test: " + "; ".join(map(str, cond)))
    return out


def compile_c(source: Path, obj: Path, includes=(), opt="-O2") -> None:
    cmd = ["gcc", opt, *CFLAGS[1:], *(f"-I{d}" for d in includes), "-c", str(source), "-o",
           str(obj)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def cythonize(pyx: Path, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from check_nogil import release_directives
    d = release_directives()
    flags = ",".join(f"{k}={v}" for k, v in d.items() if k != "language_level")
    subprocess.run([sys.executable, "-m", "cython", f"-{d.get('language_level', 3)}", "-X",
                    flags, "-I", str(ROOT), str(pyx), "-o", str(out)],
                   check=True, capture_output=True)


def resolve(funcs: dict[str, list[Insn]], name: str) -> tuple[str, list[Insn]] | None:
    """The function called ``name``: exactly, or a Cython mangling ending in ``_name``
    (gcc's clones such as ``.isra.0`` / ``.constprop.0`` included)."""
    for sym, insns in funcs.items():
        base = sym.split(".")[0]
        if sym == name or base == name or (base.startswith("__pyx_f_")
                                           and base.endswith("_" + name)):
            return sym, insns
    return None


def check_object(obj: Path, names: list[str]) -> list[str]:
    funcs = disassemble(obj)
    out = []
    for name in names:
        hit = resolve(funcs, name)
        if hit is None:
            out.append(f"{obj.name}: no function {name}")
        else:
            out.extend(findings(hit[0], hit[1]))
    return out


def build(source: str, tmp: Path, opt="-O2") -> Path:
    src = ROOT / source
    obj = tmp / (src.stem + opt + ".o")
    if src.suffix == ".pyx":
        c = tmp / (src.stem + ".c")
        cythonize(src, c)
        import numpy
        compile_c(c, obj, [sysconfig.get_paths()["include"], numpy.get_include(), str(ROOT)])
    else:
        compile_c(src, obj, opt=opt)
    return obj


def negative_control(tmp: Path) -> list[str]:
    src = tmp / "negative_control.c"
    src.write_text(NEGATIVE_CONTROL)
    obj = tmp / "negative_control.o"
    compile_c(src, obj)
    return check_object(obj, ["branchy_l1_ofi"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--show", help="print this kernel's disassembly and its inner loops")
    ap.add_argument("--only", help="check only this source (e.g. ofi_fast/_trades.pyx)")
    args = ap.parse_args(argv)
    problems, checked = [], 0
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        if not negative_control(tmp):
            problems.append("negative control: the branchy loop was not flagged")
        for source, names in KERNELS.items():
            if args.only and source != args.only:
                continue
            if args.show:
                hit = resolve(disassemble(build(source, tmp)), args.show)
                if hit:
                    loops = inner_loops(hit[1])
                    for i in hit[1]:
                        mark = "*" if any(a <= i.addr <= b for a, b in loops) else " "
                        print(mark, i)
                    print(hit[0], "inner loops:", [f"{a:x}-{b:x}" for a, b in loops])
                continue
            for opt in ["-O2", *EXTRA_OPT.get(source, [])]:
                found = check_object(build(source, tmp, opt), names)
                problems.extend(f"{p} ({opt})" if opt != "-O2" else p for p in found)
                checked += len(names)
    if args.show:
        return 0
    for p in problems:
        print(p)
    print(f"check_branches: {checked} kernels checked, {len(problems)} problems")
    return 1 if problems else 0


# trades4: classify_trades' Lee-Ready loop is C (trd_lee_ready, 16 trades a step in vector
# lanes); the Cython _classify_lee_ready only calls it.
KERNELS["ofi_fast/_trades.pyx"] = [
    "trd_lee_ready" if k == "_classify_lee_ready" else k for k in KERNELS["ofi_fast/_trades.pyx"]]


if __name__ == "__main__":
    sys.exit(main())
