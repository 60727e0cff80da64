"""Shared pytest configuration: fixture modules used by more than one test suite."""

pytest_plugins = [
    "fixtures.compiled",
]
