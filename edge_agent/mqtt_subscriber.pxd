# C types for mqtt_subscriber.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
# Every PUBLISH received becomes an InboundMessage: as a C struct it is built and read without dict lookups.

cdef class InboundMessage:
    cdef public object topic, payload
    cdef public Py_ssize_t qos, mid
    cdef public bint dup, retain
