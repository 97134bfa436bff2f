# Branch-free selects on float64: the building block of every hot loop that compares prices
# or tests validity. `c ? x : y` in C (and `x if c else y` in Cython) is often compiled into a
# conditional jump, which mispredicts on market data (a price moves up or down at random);
# these select by AND-ing the bits with an all-ones or all-zeros mask, so gcc -O2 emits
# setcc / neg / and instead (tools/check_branches.py checks the kernels that use them).
# The result is exactly x or exactly y, bit for bit (signed zeros and NaN payloads kept).

from libc.stdint cimport uint64_t

from ofi_fast._types cimport float64_t

cdef union F64Bits:
    float64_t f
    uint64_t u


# x where c is true, +0.0 where it is false.
cdef inline float64_t f64_keep(bint c, float64_t x) noexcept nogil:
    cdef F64Bits b
    b.f = x
    b.u = b.u & (-<uint64_t>(c != 0))
    return b.f


# x where c is true, y where it is false.
cdef inline float64_t f64_choose(bint c, float64_t x, float64_t y) noexcept nogil:
    cdef F64Bits bx, by
    cdef uint64_t m = -<uint64_t>(c != 0)
    bx.f = x
    by.f = y
    bx.u = (bx.u & m) | (by.u & ~m)
    return bx.f
