# C types for cleaning.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
# The range step runs in most pipelines: its bounds are C structs, its lookups C calls.
cimport cython

from edge_agent.pipeline.step_config cimport GlobMap


cdef class _Bound:
    cdef public object lo, hi, action, value


cdef class RangeStep:
    cdef public object name
    cdef public GlobMap _limits

    @cython.locals(limits=GlobMap, bound=_Bound, metrics=dict)
    cpdef object apply(self, object point, object ctx)
