# C types for downsample.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
# The downsampler routes every value of every point: its tables are C-typed attributes.

cdef class Downsampler:
    cdef public object _marks, _sink
    cdef public dict _routes
    cdef public list _out, _rules, rules
