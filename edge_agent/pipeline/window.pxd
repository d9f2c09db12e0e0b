# C types for window.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
cimport cython


cdef class _Window:
    cdef public object key, prev, first, last
    cdef public double start, max_ts, total, lo, hi
    cdef public Py_ssize_t n
    cdef public bint text
    cpdef add(self, double x, double ts)


cdef class _MomentWindow(_Window):
    cdef public double m2, mean

    @cython.locals(n=Py_ssize_t, delta=double)
    cpdef add(self, double x, double ts)


cdef class _SampleWindow(_MomentWindow):
    cdef public object cap, rng, samples
    cpdef add(self, double x, double ts)


cdef class WindowAggregator:
    cdef public object _ctx, _make, _outputs, _sink, _sorted
    cdef public dict _open, _due
    cdef public list _times
    cdef public double width, lateness
    cdef public Py_ssize_t open_windows, _series

    @cython.locals(w=_Window, width=double, start=double)
    cpdef bint add(self, object device, object metric, double ts, object value, double now, bint replay,
                   list out) except -1

    @cython.locals(series=dict)
    cdef _Window _head(self, object device, object metric)
