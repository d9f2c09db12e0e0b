"""Pydantic model families of the REST API, one module per entity (create, update, public)."""
