# C types for pipeline.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
# Every point goes through the router and its pipeline: their tables are C-typed attributes.

cdef class Pipeline:
    cdef public object ctx, downsampler, name, tap
    cdef public list steps
    cpdef object process(self, object point, double now)


cdef class PipelineRouter:
    cdef public list pipelines, _configs
    cdef public object _passthrough, _device_type
    cdef public dict _routes
    cpdef object process(self, object point, double now)
