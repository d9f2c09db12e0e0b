# C types for step_config.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
# A range or unit step looks up its setting for every value of every point: a C method over typed dicts.

cdef class GlobMap:
    cdef public dict _exact, _cache
    cdef list _globs
    cpdef object get(self, object name)
