# Shared by every compiled class: checked allocation sizes and the per-object thread guard.
#
# Allocation: ``checked_malloc(n, itemsize, name)`` refuses a count whose byte size overflows
# (ValueError naming the argument ``name``) and turns a failed malloc into MemoryError. Use it
# (or ``checked_nbytes``) for every buffer whose size comes from a user's argument.
#
# Threads: a class whose methods release the GIL holds a ``Guard`` (initialised in __cinit__
# with ``guard_init``, freed in __dealloc__ with ``guard_free``). Calls on one object from
# several threads serialise instead of racing:
#   - a method that releases the GIL while it touches the state brackets that section with
#     ``guard_enter`` (before ``with nogil``, GIL held) and ``guard_exit`` (after it, GIL held
#     again; also on the error path). ``guard_enter`` takes the object's lock, waiting with the
#     GIL released if another thread holds it, then marks the object busy;
#   - a method that keeps the GIL throughout (``update``, properties, ``reset``, pickling)
#     calls ``guard_wait`` first, or the inlined ``if g.busy: guard_wait(&g)``: one load and
#     an untaken branch on the single-thread path. It returns when no other thread is inside a
#     GIL-released section of this object. While this thread holds the GIL nobody can start one
#     (``guard_enter`` sets busy only with the GIL held), so the method then runs alone.
# The ``cdef ... noexcept nogil`` C API for cimporting code is not guarded: a caller that
# shares one object between threads without the GIL brings its own lock.

from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_release_lock, PyThread_type_lock,
)
from libc.stdint cimport SIZE_MAX
from libc.stdlib cimport malloc


cdef struct Guard:
    PyThread_type_lock lock
    int busy


cdef inline int guard_init(Guard* g) except -1:
    g.busy = 0
    g.lock = PyThread_allocate_lock()
    if g.lock == NULL:
        raise MemoryError("could not allocate the object's lock")
    return 0


cdef inline void guard_free(Guard* g) noexcept:
    if g.lock != NULL:
        PyThread_free_lock(g.lock)
        g.lock = NULL


cdef inline int guard_wait(Guard* g) except -1:
    # GIL held. Wait (GIL released) until no other thread is in a GIL-released section.
    while g.busy:
        with nogil:
            PyThread_acquire_lock(g.lock, WAIT_LOCK)
            PyThread_release_lock(g.lock)
    return 0


cdef inline int guard_enter(Guard* g) except -1:
    # GIL held. Take the lock (waiting with the GIL released when contended), then mark busy.
    if not PyThread_acquire_lock(g.lock, NOWAIT_LOCK):
        with nogil:
            PyThread_acquire_lock(g.lock, WAIT_LOCK)
    g.busy = 1
    return 0


cdef inline void guard_exit(Guard* g) noexcept:
    # GIL held. Clear busy first, then let a waiting thread in.
    g.busy = 0
    PyThread_release_lock(g.lock)


cdef inline size_t checked_nbytes(Py_ssize_t n, size_t itemsize, str name) except 0:
    # Byte size of n items (at least 1, so malloc(0) never returns a pointer of its own choosing).
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    if itemsize != 0 and <size_t> n > (SIZE_MAX // 2) // itemsize:
        raise ValueError(f"{name}={n} is too large: {n} x {itemsize} bytes overflows")
    if n == 0:
        return itemsize if itemsize > 0 else 1
    return <size_t> n * itemsize


cdef inline void* checked_malloc(Py_ssize_t n, size_t itemsize, str name) except NULL:
    cdef size_t nbytes = checked_nbytes(n, itemsize, name)
    cdef void* p = malloc(nbytes)
    if p == NULL:
        raise MemoryError(f"{name}={n} needs {nbytes:,} bytes, which could not be allocated")
    return p
