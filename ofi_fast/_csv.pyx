"""Typed tokenizer for comma-separated numeric lines (the feed readers' CSV hot path).

One pass over a block of bytes writes each field straight into a preallocated numpy column
(int64, int8 or float64, any stride), with the GIL released and no Python object in the loop.
Each column has a *kind* (see ``_csv.pxd``):

- ``INT``: ``[+-]?[0-9]+`` -> int64, checked against ``lo..hi``, then ``v * mult + offset``
  (overflow-checked; Tardis microseconds -> ns with ``mult=1000``);
- ``INT8``: the same into int8 (``lo..hi`` within -128..127, optionally non-zero);
- ``SCALED``: ``[+-]?[0-9]*(\\.[0-9]*)?`` (at least one digit) -> the exact integer number of
  ``10**-digits`` units, plus ``offset``. Decimals beyond ``digits`` are rounded to the nearest
  unit, halves away from zero, from the first dropped digit (LOBSTER "seconds after midnight"
  with up to 9 decimals -> int64 ns exactly; no float is ever involved);
- ``FLOAT``: ``[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?`` -> float64 equal bit for
  bit to Python's ``float(text)``: with at most 15 significant digits and a decimal exponent in
  -22..22 the value is ``m * 10**e`` or ``m / 10**e`` of two exactly representable doubles (one
  correctly rounded IEEE operation; Clinger 1990, "How to read floating point numbers
  accurately"); otherwise the field is copied and read with C ``strtod`` (correctly rounded in
  glibc; the reader checks once that LC_NUMERIC uses ``.``). No ``nan`` / ``inf`` spelling is
  accepted; a value that overflows to infinity is an error. Optional bounds: ``> 0`` / ``>= 0``;
  optionally an empty field reads as ``empty`` (Tardis book snapshots' missing levels);
- ``INT_F64``: an integer -> ``float64(v) / divisor`` (the same two IEEE operations as
  ``a.astype(float64) / divisor``; LOBSTER prices in 1/10000 USD), a ``sentinel`` integer ->
  NaN (LOBSTER's dummy prices of empty levels), and a size column can read 0.0 after its
  price column hit the sentinel;
- ``BOOL`` (``true``/``false``), ``SIDE_BOOK`` (``bid``/``ask``), ``SIDE_TRADE``
  (``buy``/``sell``/``unknown``) -> int8 +1/-1(/0) (BOOL: 1/0);
- ``ID``: an int64 integer, anything else -> -1 and counted (Tardis' non-numeric trade ids);
- ``SKIP``: any bytes up to the next comma (exchange / symbol strings);
- ``MATCH``: the field must equal ``token`` (bytes: a symbol); a line with another value is a
  filter, not an error: it is consumed, no row is written and it is counted (``other``), or,
  with ``strict=True``, it is a ``P_BAD_TOKEN`` error naming the line (a file that holds more
  symbols than the one the reader expects).

Lines end with ``\\n`` or ``\\r\\n``; the last line may lack its newline (``final=True``). A
``\\r`` anywhere else is part of a field (and fails a numeric one). Empty lines are an error
unless ``skip_blank``. No quoting (the feeds' files have none).

Errors: :func:`parse_block` stops at the first bad line and returns a :data:`ParseStatus` with
the line (count of lines consumed before it), the 0-based field and its byte range; the Python
edge (:class:`Tokenizer`) returns them so that the reader raises ``ParseError`` naming the file,
line number and field, or skips the line and counts it. Rows written before the bad line stay.
"""

cimport cython
from libc.math cimport NAN, isfinite
from libc.stdint cimport INT64_MAX, INT64_MIN, int8_t, uint64_t
from libc.stdlib cimport free, malloc, strtod
from libc.string cimport memchr, memcmp, memcpy

import sys

import numpy as np

from ofi_fast._guard cimport Guard, guard_enter, guard_exit, guard_free, guard_init, guard_wait
from ofi_fast._types cimport float64_t, int64_t, intp_t

SKIP, INT, INT8, SCALED, FLOAT, INT_F64, BOOL, SIDE_BOOK, SIDE_TRADE, ID, MATCH = range(11)
KIND_NAMES = ("skip", "int", "int8", "scaled", "float", "int_f64", "bool", "side_book",
              "side_trade", "id", "match")
(PARSE_OK, PARSE_BAD_NUMBER, PARSE_OUT_OF_RANGE, PARSE_OVERFLOW, PARSE_TOO_FEW, PARSE_TOO_MANY,
 PARSE_BAD_TOKEN, PARSE_EMPTY_FIELD, PARSE_EMPTY_LINE, PARSE_TOO_LONG) = range(10)

_OUT_DTYPE = {K_INT: np.dtype(np.int64), K_INT8: np.dtype(np.int8),
              K_SCALED: np.dtype(np.int64), K_FLOAT: np.dtype(np.float64),
              K_INT_F64: np.dtype(np.float64), K_BOOL: np.dtype(np.int8),
              K_SIDE_BOOK: np.dtype(np.int8), K_SIDE_TRADE: np.dtype(np.int8),
              K_ID: np.dtype(np.int64)}

# Exactly representable powers of ten (10**22 is the largest power of ten a double holds exactly).
cdef double P10F[23]
cdef int64_t P10I[19]
cdef int _i
P10F[0] = 1.0
P10I[0] = 1
for _i in range(1, 23):
    P10F[_i] = P10F[_i - 1] * 10.0
for _i in range(1, 19):
    P10I[_i] = P10I[_i - 1] * 10

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <intrin.h>
    static __inline int ofi_ctz64(unsigned long long x) {
        unsigned long i; _BitScanForward64(&i, x); return (int)i;
    }
    #else
    #define ofi_ctz64(x) __builtin_ctzll(x)
    #endif
    """
    int ofi_ctz64(unsigned long long x) noexcept nogil

cdef bint LITTLE_ENDIAN = sys.byteorder == "little"  # SWAR paths assume little-endian bytes

# 2**63 // 10: above it one more decimal digit may overflow.
cdef uint64_t TENTH = 922337203685477580ULL
cdef int STRTOD_BUF = 400  # longest float field handed to strtod (tmp buffer size)
cdef intp_t PY_SSIZE_T_MAX_ = <intp_t>((<size_t>-1) >> 1)


cdef inline bint is_digit(char c) noexcept nogil:
    return <unsigned char>(c - 48) < 10


cdef inline bint at_end(const char* q, const char* le) noexcept nogil:
    """True when ``q`` ends a field: line end or a comma."""
    return q >= le or q[0] == 44


cdef inline int swar_digits(const char* p, uint64_t* val) noexcept nogil:
    """Count (0..8) and value of the leading ASCII digits of the 8 bytes at ``p``.

    SWAR (Lemire, "Fast parsing of integers", 2018): bytes XOR '0' are digits iff < 10; the
    first non-digit byte is found from the high bits of ``x + 0x76`` (a carry only leaks into
    bytes after a non-digit, which are ignored); the n digits are shifted to the top bytes
    (as if left-padded with zeros) and combined pairwise by three multiplications.
    Little-endian byte order only (the callers check LITTLE_ENDIAN). ``*val`` = 0 when n = 0.
    """
    cdef uint64_t x
    cdef uint64_t mask
    cdef int n
    memcpy(&x, p, 8)
    x ^= 0x3030303030303030ULL
    mask = ((x + 0x7676767676767676ULL) | x) & 0x8080808080808080ULL
    n = 8 if mask == 0 else (ofi_ctz64(mask) >> 3)
    if n == 0:
        val[0] = 0
        return 0
    x <<= 8 * (8 - n)
    x = ((x & 0x0F0F0F0F0F0F0F0FULL) * 2561ULL) >> 8
    x = ((x & 0x00FF00FF00FF00FFULL) * 6553601ULL) >> 16
    x = ((x & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32
    val[0] = x
    return n


cdef inline const char* digits_fast(const char* p, const char* be, uint64_t* val) noexcept nogil:
    """Consume digits 8 at a time while no overflow is possible (value < 10**10 before each
    step); the caller's scalar loop finishes (and overflow-checks) the rest."""
    cdef uint64_t v = val[0]
    cdef uint64_t x = 0
    cdef int n
    if not LITTLE_ENDIAN:
        return p
    while p + 8 <= be and v < 10000000000ULL:
        n = swar_digits(p, &x)
        if n == 0:
            break
        v = v * <uint64_t>P10I[n] + x
        p += n
        if n < 8:
            break
    val[0] = v
    return p


cdef inline int uint_fast(const char* q, const char* be, uint64_t* out) noexcept nogil:
    """1..18 leading digits at ``q`` (< 10**18: no overflow) by at most three SWAR steps, no
    call: the count, or 0 when not handled here (sign, no digit, 19+ digits, near the buffer
    end): then the full parser runs. Used inline by the integer columns' hot path."""
    cdef uint64_t a = 0
    cdef uint64_t b = 0
    cdef int n1, n2
    if not LITTLE_ENDIAN or q + 16 > be:
        return 0
    n1 = swar_digits(q, &a)
    if n1 < 8:
        out[0] = a
        return n1
    n2 = swar_digits(q + 8, &b)
    if n2 < 8:
        out[0] = a * <uint64_t>P10I[n2] + b
        return 8 + n2
    if q + 24 > be:
        return 0
    a = a * 100000000ULL + b  # 16 digits, < 10**16
    n2 = swar_digits(q + 16, &b)
    if n2 > 2:  # 19+ digits may overflow: the full parser checks
        return 0
    out[0] = a * <uint64_t>P10I[n2] + b
    return 16 + n2


cdef inline int ufloat_fast(const char* q, const char* be, float64_t* out) noexcept nogil:
    """Unsigned ``d{0,7}.d{0,7}`` or ``d{1,7}`` (no exponent) at ``q``: the bytes consumed, or
    0 when not handled here. ``m / 10**k`` with ``m < 10**14`` and ``k <= 7``: one correctly
    rounded IEEE division of two exact doubles, equal to ``float(text)``."""
    cdef uint64_t a = 0
    cdef uint64_t b = 0
    cdef int n1, n2
    cdef const char* r
    if not LITTLE_ENDIAN or q + 18 > be:
        return 0
    n1 = swar_digits(q, &a)
    if n1 == 8:
        return 0
    r = q + n1
    if r[0] == 46:  # '.'
        n2 = swar_digits(r + 1, &b)
        if n2 == 8 or n1 + n2 == 0:
            return 0
        r = r + 1 + n2
        if r[0] == 101 or r[0] == 69:
            return 0
        out[0] = <float64_t>(a * <uint64_t>P10I[n2] + b) / P10F[n2]
        return <int>(r - q)
    if n1 == 0 or r[0] == 101 or r[0] == 69:
        return 0
    out[0] = <float64_t>a
    return n1


cdef inline int parse_uint(const char** pp, const char* le, const char* be, bint neg,
                           uint64_t* out) noexcept nogil:
    """Digits at ``*pp`` into ``out`` (magnitude <= 2**63 - 1, or 2**63 when ``neg``)."""
    cdef const char* d0 = pp[0]
    cdef uint64_t v = 0
    cdef uint64_t d
    cdef uint64_t last = 7 + neg  # last digit allowed after TENTH
    cdef const char* p = digits_fast(d0, be, &v)
    while p < le and is_digit(p[0]):
        d = <uint64_t>(p[0] - 48)
        if v >= TENTH and (v > TENTH or d > last):
            return P_OVERFLOW
        v = v * 10 + d
        p += 1
    if p == d0:
        return P_BAD_NUMBER
    pp[0] = p
    out[0] = v
    return P_OK


cdef inline int64_t signed(uint64_t v, bint neg) noexcept nogil:
    if neg:
        return <int64_t>(~v + 1)
    return <int64_t>v


cdef inline int parse_int(const char** pp, const char* le, const char* be,
                          int64_t* out) noexcept nogil:
    """``[+-]?[0-9]+`` -> int64 (overflow-checked)."""
    cdef const char* p = pp[0]
    cdef bint neg = False
    cdef uint64_t v
    cdef int st
    if p < le and (p[0] == 45 or p[0] == 43):  # '-' '+'
        neg = p[0] == 45
        p += 1
    st = parse_uint(&p, le, be, neg, &v)
    if st:
        return st
    pp[0] = p
    out[0] = signed(v, neg)
    return P_OK


cdef inline int parse_scaled(const char** pp, const char* le, const char* be, int digits,
                             int64_t* out) noexcept nogil:
    """Exact decimal -> integer units of 10**-digits; rounding half away from zero."""
    cdef const char* p = pp[0]
    cdef bint neg = False
    cdef bint any_digit = False
    cdef uint64_t v = 0
    cdef uint64_t d
    cdef uint64_t lim
    cdef int nf = 0
    cdef int up = 0
    cdef int n
    cdef uint64_t x = 0
    cdef const char* s0
    if p < le and (p[0] == 45 or p[0] == 43):
        neg = p[0] == 45
        p += 1
    lim = <uint64_t>INT64_MAX + neg
    s0 = p
    p = digits_fast(p, be, &v)
    any_digit = p > s0
    while p < le and is_digit(p[0]):
        d = <uint64_t>(p[0] - 48)
        if v >= TENTH and (v > TENTH or d > <uint64_t>(7 + neg)):
            return P_OVERFLOW
        v = v * 10 + d
        p += 1
        any_digit = True
    if p < le and p[0] == 46:  # '.'
        p += 1
        if LITTLE_ENDIAN and p + 8 <= be and v < 10000000000ULL:
            n = swar_digits(p, &x)
            if n <= digits:
                v = v * <uint64_t>P10I[n] + x
                nf = n
                p += n
                any_digit = any_digit or n > 0
        while p < le and is_digit(p[0]):
            d = <uint64_t>(p[0] - 48)
            if nf < digits:
                if v >= TENTH and (v > TENTH or d > <uint64_t>(7 + neg)):
                    return P_OVERFLOW
                v = v * 10 + d
            elif nf == digits:
                up = d >= 5
            nf += 1
            p += 1
            any_digit = True
    if not any_digit:
        return P_BAD_NUMBER
    if nf < digits:
        if v > lim / <uint64_t>P10I[digits - nf]:
            return P_OVERFLOW
        v *= <uint64_t>P10I[digits - nf]
    if up:
        if v == lim:
            return P_OVERFLOW
        v += 1
    pp[0] = p
    out[0] = signed(v, neg)
    return P_OK


cdef inline int parse_float(const char** pp, const char* le, const char* be,
                            float64_t* out) noexcept nogil:
    """Decimal (optionally with exponent) -> the correctly rounded float64."""
    cdef const char* p = pp[0]
    cdef const char* s0 = p
    cdef bint neg = False
    cdef bint any_digit = False
    cdef bint lost = False
    cdef bint eneg = False
    cdef uint64_t m = 0
    cdef int nd = 0          # significant digits held in m
    cdef int64_t e10 = 0     # value = m * 10**e10 (when not lost)
    cdef int64_t ex = 0
    cdef int d
    cdef float64_t v
    cdef char tmp[400]
    cdef char* endp
    cdef intp_t n
    cdef uint64_t a = 0
    cdef uint64_t b = 0
    cdef int n1, n2
    cdef const char* q
    if p < le and (p[0] == 45 or p[0] == 43):
        neg = p[0] == 45
        p += 1
    if LITTLE_ENDIAN and p + 18 <= be:
        # fast path: up to 8 integer + 8 fraction digits, no exponent: m = a * 10**n2 + b has
        # at most 14 digits (< 2**53) and 10**n2 is exact, so m / 10**n2 is correctly rounded
        n1 = swar_digits(p, &a)
        if n1 < 8:
            q = p + n1
            if q[0] == 46:
                n2 = swar_digits(q + 1, &b)
                q = q + 1 + n2
                if n2 < 8 and n1 + n2 > 0 and q[0] != 101 and q[0] != 69:
                    v = <float64_t>(a * <uint64_t>P10I[n2] + b) / P10F[n2]
                    pp[0] = q
                    out[0] = -v if neg else v
                    return P_OK
            elif n1 > 0 and q[0] != 101 and q[0] != 69:
                v = <float64_t>a
                pp[0] = q
                out[0] = -v if neg else v
                return P_OK
    while p < le and is_digit(p[0]):
        d = p[0] - 48
        any_digit = True
        if m == 0 and d == 0:
            pass
        elif nd < 19:
            m = m * 10 + <uint64_t>d
            nd += 1
        else:
            e10 += 1
            lost = True
        p += 1
    if p < le and p[0] == 46:
        p += 1
        while p < le and is_digit(p[0]):
            d = p[0] - 48
            any_digit = True
            if m == 0 and d == 0:
                e10 -= 1
            elif nd < 19:
                m = m * 10 + <uint64_t>d
                nd += 1
                e10 -= 1
            else:
                lost = True
            p += 1
    if not any_digit:
        return P_BAD_NUMBER
    if p < le and (p[0] == 101 or p[0] == 69):  # 'e' 'E'
        p += 1
        if p < le and (p[0] == 45 or p[0] == 43):
            eneg = p[0] == 45
            p += 1
        if not (p < le and is_digit(p[0])):
            return P_BAD_NUMBER
        while p < le and is_digit(p[0]):
            if ex < 100000000:
                ex = ex * 10 + (p[0] - 48)
            p += 1
        e10 += -ex if eneg else ex
    if m == 0:
        v = 0.0
    elif nd <= 15 and not lost and -22 <= e10 <= 22:
        v = <float64_t>m
        if e10 >= 0:
            v = v * P10F[e10]
        else:
            v = v / P10F[-e10]
    else:
        n = p - s0
        if n >= STRTOD_BUF:
            return P_TOO_LONG
        memcpy(tmp, s0, n)
        tmp[n] = 0
        v = strtod(tmp, &endp)
        if endp != tmp + n:
            return P_BAD_NUMBER
        if not isfinite(v):
            return P_OVERFLOW
        out[0] = v
        pp[0] = p
        return P_OK
    pp[0] = p
    out[0] = -v if neg else v
    return P_OK


cdef inline bint word_is(const char* p, intp_t n, const char* w, intp_t wn) noexcept nogil:
    return n == wn and memcmp(p, w, <size_t>wn) == 0


cdef inline const char* field_end(const char* q, const char* le) noexcept nogil:
    cdef const char* c = <const char*>memchr(q, 44, <size_t>(le - q))
    return le if c == NULL else c


cdef inline int parse_id(const char* fs, const char* q, int64_t* out) noexcept nogil:
    """``[+-]?[0-9]+`` filling the whole field ``fs..q`` -> int64, else P_BAD_NUMBER."""
    cdef const char* p = fs
    if parse_int(&p, q, q, out) != P_OK or p != q:
        return P_BAD_NUMBER
    return P_OK


cdef inline int parse_field(const ColSpec* col, const char** qq, const char* le,
                            const char* be, intp_t row, bint* sent,
                            int64_t* bad_ids) noexcept nogil:
    """Parse one field at ``*qq`` into ``col``'s row ``row``; ``*qq`` moves to the field end."""
    cdef const char* q = qq[0]
    cdef const char* fs = q
    cdef int kind = col.kind
    cdef int st = P_OK
    cdef int64_t iv
    cdef uint64_t uv = 0
    cdef float64_t fv
    cdef intp_t n
    cdef bint hit = False
    cdef char* dst = col.out + row * col.stride
    if kind == K_INT_F64:
        n = uint_fast(q, be, &uv)  # hot path: unsigned, up to 15 digits, no call
        if n:
            iv = <int64_t>uv
            q += n
        else:
            st = parse_int(&q, le, be, &iv)
        if st == P_OK and at_end(q, le):
            if (col.flags & F_SENTINEL) and iv == col.sentinel:
                (<float64_t*>dst)[0] = NAN
                hit = True
            elif iv < col.lo or iv > col.hi:
                st = P_OUT_OF_RANGE
            elif (col.flags & F_ZERO_AFTER_SENT) and sent[0]:
                (<float64_t*>dst)[0] = 0.0
            elif col.divisor == 1.0:
                (<float64_t*>dst)[0] = <float64_t>iv
            else:
                (<float64_t*>dst)[0] = (<float64_t>iv) / col.divisor
    elif kind == K_INT or kind == K_INT8:
        n = uint_fast(q, be, &uv)
        if n:
            iv = <int64_t>uv
            q += n
        else:
            st = parse_int(&q, le, be, &iv)
        if st == P_OK and at_end(q, le):
            if iv < col.lo or iv > col.hi or ((col.flags & F_NONZERO) and iv == 0):
                st = P_OUT_OF_RANGE
            elif kind == K_INT8:
                (<int8_t*>dst)[0] = <int8_t>iv
            else:
                if col.mult != 1:
                    if iv > col.mult_lim or iv < -col.mult_lim:
                        return P_OVERFLOW
                    iv = iv * col.mult
                if col.offset > 0 and iv > INT64_MAX - col.offset:
                    return P_OVERFLOW
                if col.offset < 0 and iv < INT64_MIN - col.offset:
                    return P_OVERFLOW
                (<int64_t*>dst)[0] = iv + col.offset
    elif kind == K_FLOAT:
        if (col.flags & F_EMPTY_OK) and at_end(q, le):
            (<float64_t*>dst)[0] = col.empty
        else:
            n = ufloat_fast(q, be, &fv)  # hot path: unsigned d.d without exponent, no call
            if n:
                q += n
            else:
                st = parse_float(&q, le, be, &fv)
            if st == P_OK and at_end(q, le):
                if (((col.flags & F_POSITIVE) and not fv > 0.0)
                        or ((col.flags & F_NONNEG) and not fv >= 0.0)):
                    st = P_OUT_OF_RANGE
                else:
                    (<float64_t*>dst)[0] = fv
    elif kind == K_SKIP:
        q = field_end(q, le)
    elif kind == K_MATCH:
        q = field_end(q, le)
        if q - fs != col.token_len or memcmp(fs, col.token, <size_t>col.token_len) != 0:
            st = P_BAD_TOKEN if col.flags & F_STRICT else P_OTHER
    elif kind == K_SCALED:
        st = parse_scaled(&q, le, be, col.digits, &iv)
        if st == P_OK and at_end(q, le):
            if iv < col.lo or iv > col.hi:
                st = P_OUT_OF_RANGE
            else:
                if col.offset > 0 and iv > INT64_MAX - col.offset:
                    return P_OVERFLOW
                if col.offset < 0 and iv < INT64_MIN - col.offset:
                    return P_OVERFLOW
                (<int64_t*>dst)[0] = iv + col.offset
    elif kind == K_ID:
        q = field_end(q, le)
        if parse_id(fs, q, &iv) == P_OK:
            (<int64_t*>dst)[0] = iv
        else:
            (<int64_t*>dst)[0] = -1
            bad_ids[0] += 1
    else:  # words
        q = field_end(q, le)
        n = q - fs
        if n == 0:
            return P_EMPTY_FIELD
        if kind == K_BOOL:
            if word_is(fs, n, b"true", 4):
                (<int8_t*>dst)[0] = 1
            elif word_is(fs, n, b"false", 5):
                (<int8_t*>dst)[0] = 0
            else:
                return P_BAD_TOKEN
        elif kind == K_SIDE_BOOK:
            if word_is(fs, n, b"bid", 3):
                (<int8_t*>dst)[0] = 1
            elif word_is(fs, n, b"ask", 3):
                (<int8_t*>dst)[0] = -1
            else:
                return P_BAD_TOKEN
        else:
            if word_is(fs, n, b"buy", 3):
                (<int8_t*>dst)[0] = 1
            elif word_is(fs, n, b"sell", 4):
                (<int8_t*>dst)[0] = -1
            elif word_is(fs, n, b"unknown", 7):
                (<int8_t*>dst)[0] = 0
            else:
                return P_BAD_TOKEN
    if st == P_OK and not at_end(q, le):
        st = P_BAD_NUMBER
    if st == P_BAD_NUMBER and at_end(fs, le):
        st = P_EMPTY_FIELD
    sent[0] = hit
    qq[0] = q
    return st


cdef inline int parse_line(const ColSpec* cols, int ncols, const char* p, const char* le,
                           const char* be, intp_t row, int64_t* bad_ids, int* field,
                           const char** fstart) noexcept nogil:
    """Parse the fields of one non-empty line ``p..le`` into row ``row``."""
    cdef const char* q = p
    cdef const char* fs
    cdef int c, st
    cdef bint sent = False
    for c in range(ncols):
        fs = q
        st = parse_field(&cols[c], &q, le, be, row, &sent, bad_ids)
        if st != P_OK:
            field[0] = c
            fstart[0] = fs
            return st
        if c + 1 < ncols:
            if q >= le:
                field[0] = c + 1
                fstart[0] = q
                return P_TOO_FEW
            q += 1
    if q < le:
        field[0] = ncols
        fstart[0] = q
        return P_TOO_MANY
    return P_OK


cdef int parse_block(const ColSpec* cols, int ncols, const char* buf, intp_t start, intp_t end,
                     intp_t max_lines, bint final, bint skip_blank, intp_t row0,
                     int64_t* line_out, int64_t line0, ParseResult* res) noexcept nogil:
    """Parse up to ``max_lines`` complete lines of ``buf[start:end]`` into the bound columns.

    A line without a newline is complete only when ``final``; otherwise parsing stops before it
    (``res.pos`` is its start) so the caller can append more bytes. On the first bad line the
    status is returned with ``res.field`` / ``res.fstart`` / ``res.fend`` / ``res.next`` set and
    ``res.pos`` at the bad line's start; rows before it are written. With ``line_out`` (not
    NULL), row r's line number is written to ``line_out[r]``: ``line0`` + the lines consumed
    before it in this call (``line0`` is the number of the call's first line).
    """
    cdef const char* p = buf + start
    cdef const char* bend = buf + end
    cdef const char* nl
    cdef const char* le
    cdef const char* nxt
    cdef const char* fs = NULL
    cdef intp_t lines = 0
    cdef intp_t rows = 0
    cdef int64_t bad_ids = 0
    cdef int64_t other = 0
    cdef int64_t line_bad
    cdef int st = P_OK
    cdef int field = -1
    while lines < max_lines and p < bend:
        nl = <const char*>memchr(p, 10, <size_t>(bend - p))
        if nl == NULL:
            if not final:
                break
            le = bend
            nxt = bend
        else:
            le = nl
            nxt = nl + 1
        if le > p and (le - 1)[0] == 13:  # '\r'
            le -= 1
        if le == p:
            if skip_blank:
                lines += 1
                p = nxt
                continue
            st = P_EMPTY_LINE
            field = -1
            fs = p
        else:
            line_bad = 0
            st = parse_line(cols, ncols, p, le, bend, row0 + rows, &line_bad, &field, &fs)
            if st == P_OTHER:   # another key's line (K_MATCH): consumed, not written
                st = P_OK
                other += 1
                lines += 1
                p = nxt
                continue
        if st != P_OK:
            res.field = field
            res.fstart = fs - buf
            res.fend = field_end(fs, le) - buf if st != P_TOO_MANY else le - buf
            res.next = nxt - buf
            break
        if line_out != NULL:
            line_out[row0 + rows] = line0 + lines
        rows += 1
        lines += 1
        bad_ids += line_bad
        p = nxt
    res.status = st
    res.pos = p - buf
    res.lines = lines
    res.rows = rows
    res.bad_ids = bad_ids
    res.other = other
    return st


cdef bint decimal_point_ok() noexcept nogil:
    """strtod reads '.' as the decimal point (LC_NUMERIC is "C"-like, Python's default)."""
    cdef char* endp
    return strtod(b"1.5", &endp) == 1.5


def column(name, kind, *, lo=None, hi=None, mult=1, offset=0, digits=0, divisor=1.0,
           sentinel=None, positive=False, nonneg=False, empty=None,
           zero_after_sentinel=False, nonzero=False, token=None, strict=False, hint=None):
    """One column spec for :class:`Tokenizer` (a plain dict; see the module docstring)."""
    if (kind == K_MATCH) != (token is not None):
        raise ValueError(f"column {name!r}: token= goes with MATCH columns only (and they need it)")
    return {"token": None if token is None else bytes(token), "strict": bool(strict),
            "hint": hint, "name": str(name), "kind": int(kind), "lo": lo, "hi": hi, "mult": int(mult),
            "offset": int(offset), "digits": int(digits), "divisor": float(divisor),
            "sentinel": sentinel, "positive": bool(positive), "nonneg": bool(nonneg),
            "empty": empty, "zero_after_sentinel": bool(zero_after_sentinel),
            "nonzero": bool(nonzero)}


@cython.final
cdef class Tokenizer:
    """A fixed list of column specs, bound to output arrays, parsing blocks of lines.

    ``Tokenizer(columns, skip_blank=False)`` with ``columns`` from :func:`column`.
    ``bind(outs)`` sets the destination of each column (a 1-D numpy array of the kind's dtype,
    any stride, or None for ``SKIP``); ``parse(buf, start, max_lines, final, row0)`` parses
    complete lines of ``buf`` (bytes-like) from byte ``start`` into rows ``row0, row0 + 1, ...``
    with the GIL released and returns ``(status, pos, lines, rows, field, fstart, fend, next,
    bad_ids, other)`` (see ``ParseResult`` in _csv.pxd). ``describe(status, field, text)`` words an
    error for ParseError.
    """
    cdef ColSpec* cols
    cdef readonly int ncols
    cdef readonly bint skip_blank
    cdef readonly tuple specs
    cdef readonly tuple names
    cdef list _outs
    cdef tuple _tokens    # the K_MATCH columns' bytes (ColSpec.token points into them)
    cdef readonly intp_t capacity
    cdef int64_t* _line_out   # bind(lines=): each row's line number (NULL: not kept)
    cdef object _lines
    cdef Guard guard      # parse() releases the GIL over the bound arrays: see _guard.pxd

    def __cinit__(self, columns, bint skip_blank=False):
        cdef int c
        cdef ColSpec* s
        specs = tuple(dict(x) for x in columns)
        if not specs:
            raise ValueError("no columns")
        if len(specs) > 4096:
            raise ValueError(f"{len(specs)} columns: at most 4096")
        guard_init(&self.guard)
        self.cols = <ColSpec*>malloc(len(specs) * sizeof(ColSpec))
        if self.cols == NULL:
            raise MemoryError()
        self.ncols = len(specs)
        self.skip_blank = skip_blank
        self.specs = specs
        self.names = tuple(x["name"] for x in specs)
        self._outs = [None] * self.ncols
        self.capacity = 0
        self._line_out = NULL
        self._lines = None
        tokens = []
        for c in range(self.ncols):
            x = specs[c]
            s = &self.cols[c]
            kind = x["kind"]
            if not 0 <= kind <= K_MATCH:
                raise ValueError(f"column {x['name']!r}: unknown kind {kind}")
            lo_default, hi_default = (-128, 127) if kind == K_INT8 else (-2**63, 2**63 - 1)
            lo = lo_default if x.get("lo") is None else int(x["lo"])
            hi = hi_default if x.get("hi") is None else int(x["hi"])
            if kind == K_INT8 and not (-128 <= lo <= hi <= 127):
                raise ValueError(f"column {x['name']!r}: int8 bounds outside -128..127")
            if not 0 <= x.get("digits", 0) <= 18:
                raise ValueError(f"column {x['name']!r}: digits must be in 0..18")
            if x.get("mult", 1) < 1:
                raise ValueError(f"column {x['name']!r}: mult must be >= 1")
            s.kind = kind
            s.lo = lo
            s.hi = hi
            s.mult = x.get("mult", 1)
            s.mult_lim = INT64_MAX // s.mult
            s.offset = x.get("offset", 0)
            s.digits = x.get("digits", 0)
            s.divisor = x.get("divisor", 1.0)
            s.sentinel = 0 if x.get("sentinel") is None else int(x["sentinel"])
            s.empty = 0.0 if x.get("empty") is None else float(x["empty"])
            s.flags = ((F_POSITIVE if x.get("positive") else 0)
                       | (F_NONNEG if x.get("nonneg") else 0)
                       | (F_EMPTY_OK if x.get("empty") is not None else 0)
                       | (F_SENTINEL if x.get("sentinel") is not None else 0)
                       | (F_ZERO_AFTER_SENT if x.get("zero_after_sentinel") else 0)
                       | (F_NONZERO if x.get("nonzero") else 0)
                       | (F_STRICT if x.get("strict") else 0))
            s.token = NULL
            s.token_len = 0
            if kind == K_MATCH:
                tok = x.get("token")
                if not isinstance(tok, bytes):
                    raise ValueError(f"column {x['name']!r}: a MATCH column needs token= bytes")
                tokens.append(tok)
                s.token = <const char*>tok
                s.token_len = len(tok)
            s.out = NULL
            s.stride = 0
        self._tokens = tuple(tokens)

    def __dealloc__(self):
        free(self.cols)
        guard_free(&self.guard)

    def bind(self, outs, lines=None):
        """Set the output array of each column (None for SKIP columns) and, optionally, a
        writeable contiguous int64 ``lines`` array that receives each row's line number (see
        :meth:`parse`'s ``line0``); capacity = the shortest of them."""
        guard_enter(&self.guard)   # Python code runs in here: hold the lock throughout
        try:
            return self._bind(outs, lines)
        finally:
            guard_exit(&self.guard)

    def _bind(self, outs, lines):
        cdef int c
        cdef intp_t cap = PY_SSIZE_T_MAX_
        outs = list(outs)
        if lines is not None:
            if (not isinstance(lines, np.ndarray) or lines.ndim != 1
                    or lines.dtype != np.int64 or not lines.flags.writeable
                    or not lines.flags.c_contiguous):
                raise ValueError("lines: need a writeable contiguous 1-D int64 array")
            cap = lines.shape[0]
        if len(outs) != self.ncols:
            raise ValueError(f"{len(outs)} outputs for {self.ncols} columns")
        for c in range(self.ncols):
            a = outs[c]
            kind = self.cols[c].kind
            if kind == K_SKIP or kind == K_MATCH:
                if a is not None:
                    raise ValueError(f"column {self.names[c]!r} is skipped: pass None")
                self.cols[c].out = NULL
                continue
            if (not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype != _OUT_DTYPE[kind]
                    or not a.flags.writeable):
                raise ValueError(f"column {self.names[c]!r}: need a writeable 1-D "
                                 f"{_OUT_DTYPE[kind]} array")
            self.cols[c].out = <char*><intp_t>a.__array_interface__["data"][0]
            self.cols[c].stride = a.strides[0]
            cap = min(cap, a.shape[0])
        self._outs = outs
        self._lines = lines
        self._line_out = (NULL if lines is None
                          else <int64_t*><intp_t>lines.__array_interface__["data"][0])
        self.capacity = cap  # unbounded when every column is skipped
        return self

    def unbind(self):
        """Forget the output arrays (before they are resized or freed)."""
        cdef int c
        if self.guard.busy:
            guard_wait(&self.guard)
        for c in range(self.ncols):
            self.cols[c].out = NULL
        self._outs = [None] * self.ncols
        self._line_out = NULL
        self._lines = None
        self.capacity = 0

    def parse(self, buf, Py_ssize_t start, Py_ssize_t max_lines, bint final, Py_ssize_t row0,
              int64_t line0=1):
        """Parse up to ``max_lines`` lines of ``buf[start:]`` into rows from ``row0``; ``line0``
        is the number of the first of these lines (for the ``lines`` output of :meth:`bind`)."""
        cdef const unsigned char[::1] mv = buf
        cdef const char* p = NULL
        cdef intp_t n = mv.shape[0]
        cdef ParseResult res
        cdef intp_t ml = max_lines
        if start < 0 or start > n or max_lines < 0 or row0 < 0:
            raise ValueError("bad start / max_lines / row0")
        if row0 + max_lines > self.capacity:
            ml = self.capacity - row0
            if ml < 0:
                raise ValueError("row0 beyond the bound outputs' capacity")
        if not decimal_point_ok():
            raise RuntimeError("C strtod does not read '.' as the decimal point: reset "
                               "LC_NUMERIC (locale.setlocale(locale.LC_NUMERIC, 'C'))")
        if n == 0:
            return (P_OK, 0, 0, 0, -1, 0, 0, 0, 0, 0)
        p = <const char*>&mv[0]
        guard_enter(&self.guard)
        if row0 + ml > self.capacity:      # re-bound to shorter arrays by another thread
            guard_exit(&self.guard)
            raise ValueError("the bound outputs changed during the call")
        try:
            with nogil:
                parse_block(self.cols, self.ncols, p, start, n, ml, final, self.skip_blank, row0,
                            self._line_out, line0, &res)
        finally:
            guard_exit(&self.guard)
        return (res.status, res.pos, res.lines, res.rows, res.field, res.fstart, res.fend,
                res.next, res.bad_ids, res.other)

    def describe(self, int status, int field, text):
        """Words for a parse error: which field, what was wrong, the field's text (cut to
        80 characters)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        if status == P_EMPTY_LINE:
            return "empty line"
        if status == P_TOO_FEW:
            return (f"too few columns: field {field + 1} ({self.names[field]}) missing, "
                    f"expected {self.ncols} columns")
        if status == P_TOO_MANY:
            return f"too many columns: expected {self.ncols} columns, more follow: {_cut(text)}"
        x = self.specs[field]
        kind = x["kind"]
        where = f"field {field + 1} ({x['name']})"
        if status == P_EMPTY_FIELD:
            return f"{where}: empty"
        if status == P_BAD_TOKEN and kind == K_MATCH:
            hint = f" ({x['hint']})" if x.get("hint") else ""
            return f"{where}: {_cut(text)} is not {_cut(x['token'])}{hint}"
        if status == P_BAD_TOKEN:
            words = {K_BOOL: "true/false", K_SIDE_BOOK: "bid/ask",
                     K_SIDE_TRADE: "buy/sell/unknown"}[kind]
            return f"{where}: {_cut(text)} is not one of {words}"
        if status == P_OVERFLOW:
            return f"{where}: {_cut(text)} overflows {'float64' if kind == K_FLOAT else 'int64'}"
        if status == P_TOO_LONG:
            return f"{where}: number longer than {STRTOD_BUF - 1} characters"
        if status == P_BAD_NUMBER:
            what = {K_SCALED: "a decimal number", K_FLOAT: "a decimal float"}.get(
                kind, "an integer")
            return f"{where}: {_cut(text)} is not {what} (invalid characters)"
        if status == P_OUT_OF_RANGE:
            if kind == K_FLOAT:
                bound = "> 0" if x.get("positive") else ">= 0"
                return f"{where}: {_cut(text)} is not {bound}"
            lo, hi = self.cols[field].lo, self.cols[field].hi
            neg = "negative, " if text.startswith(b"-") and lo >= 0 else ""
            nz = " and non-zero" if x.get("nonzero") else ""
            return f"{where}: {_cut(text)} is {neg}outside {lo}..{hi}{nz}"
        return f"{where}: parse status {status}"


def _cut(text, int limit=80):
    """``repr`` of a field's bytes, cut to ``limit`` characters (a marker says it was cut)."""
    r = repr(bytes(text[:limit]))
    return r + "..." if len(text) > limit else r


def parse_rows(columns, data, *, skip_blank=False):
    """Parse all of ``data`` (bytes) with ``columns`` into fresh arrays (tests and small inputs).

    Returns ``(arrays, bad_ids)`` on success or raises ``ValueError(status, line, field,
    message)`` at the first bad line (1-based line).
    """
    tok = Tokenizer(columns, skip_blank)
    nmax = data.count(b"\n") + 1
    outs = [None if x["kind"] in (K_SKIP, K_MATCH) else np.zeros(nmax, _OUT_DTYPE[x["kind"]])
            for x in tok.specs]
    tok.bind(outs)
    st, pos, lines, rows, field, fs, fe, nxt, bad, _ = tok.parse(data, 0, nmax, True, 0)
    if st:
        raise ValueError(st, lines + 1, field, tok.describe(st, field, bytes(data[fs:fe])))
    return [None if a is None else a[:rows] for a in outs], bad
