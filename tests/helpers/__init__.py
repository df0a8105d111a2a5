"""Helpers shared by test modules, importable as `tests.helpers.*` (conftest files hold fixtures only)."""
