"""Accelerator families, one package each (docs/gemmini.md for the Gemmini family)."""
