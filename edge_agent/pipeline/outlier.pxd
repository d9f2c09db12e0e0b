# C types for outlier.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
# The Hampel window's buffers are typed memoryviews: its searches and shifts are C loops over doubles.
cimport cython

cdef double MAD_TO_STDDEV, MEAN_AD_TO_STDDEV, INF, _MARGIN


@cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
cpdef Py_ssize_t position(double[:] ordered, Py_ssize_t n, double x) except -1


cpdef replace_sorted(double[:] ordered, Py_ssize_t n, double old, double x)


cpdef move_into_place(double[:] ordered, Py_ssize_t i, Py_ssize_t j, double x)


@cython.locals(best=double, span=double, i=Py_ssize_t)
cpdef double shortest_span(double[:] ordered, Py_ssize_t n, Py_ssize_t run) except? -1.0


@cython.locals(half=Py_ssize_t, odd=Py_ssize_t, size=Py_ssize_t, lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t,
               median=double, deviation=double, below=double, above=double)
cpdef (double, double) median_and_mad(double[:] ordered, Py_ssize_t n)


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
    cdef double[:] ring, ordered
    cdef public Py_ssize_t count, pos
    cdef public double limit, center

    @cython.locals(ordered=cython.double[:], n=Py_ssize_t, median=double, mad=double, scale=double, split=Py_ssize_t)
    cpdef bint outlier(self, double x) except -1

    @cython.locals(n=Py_ssize_t, pos=Py_ssize_t)
    cpdef add(self, double x)

    @cython.locals(ordered=cython.double[:], n=Py_ssize_t, k=Py_ssize_t, half=Py_ssize_t, odd=Py_ssize_t, first=Py_ssize_t, last=Py_ssize_t,
                   run=Py_ssize_t, span=double, a=double, b=double, bound=double, lo=double, hi=double)
    cdef _sure_band(self)


cdef class ZScoreWindow(SeriesWindow):
    cdef public _Params params
    cdef public object ring
    cdef public Py_ssize_t pos, updates
    cdef public double mean, sq_dev
    cpdef bint outlier(self, double x) except -1
    cpdef add(self, double x)


@cython.final
cdef class OutlierStep:
    cdef public object _action, _params, _selects, _window_type, name
    cdef public dict _devices

    @cython.locals(window=SeriesWindow, x=double, windows=dict, metrics=dict)
    cpdef object apply(self, object point, object ctx)
