# C types for outlier.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
cimport cython


@cython.locals(values=cython.double[:], lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
cpdef Py_ssize_t position(object ordered, double x) except -1


@cython.locals(values=cython.double[:], best=double, span=double, i=Py_ssize_t)
cpdef double shortest_span(object ordered, Py_ssize_t run) except? -1.0


cdef class _Params:
    cdef public Py_ssize_t window, band_updates, min_samples, max_consecutive
    cdef public double threshold, min_deviation


cdef class SeriesWindow:
    cdef public Py_ssize_t credit
    cdef public double lo, hi
    cdef public object rejected
    cpdef bint outlier(self, double x) except -1
    cpdef add(self, double x)


cdef class HampelWindow(SeriesWindow):
    cdef public _Params params
    cdef public object ring, ordered
    cdef public Py_ssize_t pos
    cdef public double limit, center
    cpdef bint outlier(self, double x) except -1
    cpdef add(self, double x)


cdef class ZScoreWindow(SeriesWindow):
    cdef public _Params params
    cdef public object ring
    cdef public Py_ssize_t pos, updates
    cdef public double mean, sq_dev
    cpdef bint outlier(self, double x) except -1
    cpdef add(self, double x)


cdef class OutlierStep:
    cdef public object _action, _devices, _params, _selects, _window_type, name

    @cython.locals(window=SeriesWindow, x=double)
    cpdef object apply(self, object point, object ctx)
