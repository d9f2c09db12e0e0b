"""The REST API: one router per resource in ``routes/``, dependencies in ``deps.py``."""
