"""Pydantic request/response models and beanie documents, one module per domain."""
