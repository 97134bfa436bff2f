# Binance diff-depth frames -> reused typed buffers (see _binance_decode.pyx); C-level API.
#
#   from ofi_fast._binance_decode cimport DiffBuffers
#
# After DiffBuffers.fill / .scan the first `n` rows of the buffers hold one message: side (+1
# bids first, then -1 asks), price, size (float64, bit for bit float() of the decimal text),
# flags (FLAG_BATCH_END on the last row), batch_end (the same as bool), ts (the same time on
# every row). The buffers are reused (grown, never shrunk): copy what you keep.

from ofi_fast._types cimport float64_t, int64_t, intp_t
from ofi_fast._book cimport BookOFI

cdef struct Cursor:
    const char* p    # next byte of the frame
    const char* end  # one past its last byte

cdef class DiffBuffers:
    cdef readonly object side, price, size, flags, batch_end, ts, out   # the numpy arrays
    cdef signed char[::1] _side
    cdef float64_t[::1] _price
    cdef float64_t[::1] _size
    cdef unsigned char[::1] _flags
    cdef unsigned char[::1] _be
    cdef int64_t[::1] _ts
    cdef float64_t[::1] _out
    cdef readonly intp_t n, capacity
    # the fields of the last scan / step (valid after a non-None scan or a step >= 0)
    cdef readonly int64_t U, u, pu, E, T, t
    cdef readonly bint has_E, has_T, has_pu, has_s, symbol_ok
    cdef const char* _sp                 # the scanned "s" (into the frame; valid in _scan's caller)
    cdef Py_ssize_t _sn
    cdef readonly float64_t e, mid     # after step() == STEP_APPLIED: the last row's e_1, mid
    cdef readonly bytes symbol           # the symbol step() takes (None: step takes none)
    cdef int _scan(self, object raw, int64_t ts_local, bint exchange_clock) except -2
    cdef int _apply_rows(self, BookOFI ofi) except -1
    cdef int _alloc(self, intp_t cap) except -1
    cdef int _grow(self, intp_t need) except -1
    # levels ["price","size"],... at the cursor from row j: the next row, or -1 (not plain)
    cdef int _levels(self, Cursor* c, signed char sd, intp_t j) except -2
