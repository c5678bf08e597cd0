"""The package version, kept apart so that reading it imports nothing heavy."""

__version__ = "0.2.0"
