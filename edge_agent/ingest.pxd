# C types for ingest.py where setup.py compiles it (an augmenting .pxd); the .py stays plain Python.
# A str-typed topic makes the prefix, suffix and slice tests of every message C calls.

cpdef object telemetry_device(str topic)
