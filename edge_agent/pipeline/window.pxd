# C types for window.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.


cdef class _Window:
    cdef public object key, prev, first, last
    cdef public double start, max_ts, total, lo, hi
    cdef public Py_ssize_t n
    cdef public bint text


cdef class _MomentWindow(_Window):
    cdef public double m2, mean


cdef class _SampleWindow(_MomentWindow):
    cdef public object cap, rng, samples
