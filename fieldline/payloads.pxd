# C types for payloads.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
# The caches of validated device ids and metric names are C-level dict and set: one hash lookup each.

cimport cython

cdef dict _valid_ids
cdef set _valid_names


@cython.locals(names=set)
cpdef list _object(dict data, str device_id, double received_at, double skew)
