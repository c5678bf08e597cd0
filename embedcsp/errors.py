"""Errors a user can cause, each tied to a documented exit code.

The CLI turns any `EmbedcspError` into one line on stderr and its `exit_code`;
anything else is a bug and exits 1 with a traceback hint.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # verification failed, or an internal error
EXIT_BAD_INPUT = 2
EXIT_NO_EMBEDDING = 3
EXIT_TIMEOUT = 4


class EmbedcspError(Exception):
    """Base of all errors that carry a user-facing message and an exit code."""

    exit_code = EXIT_FAILED


class BadInput(EmbedcspError):
    """Shapes, names, files or options that cannot be used as given."""

    exit_code = EXIT_BAD_INPUT


class IsaError(BadInput):
    """A malformed or inconsistent accelerator description."""


class NoEmbedding(EmbedcspError):
    """The instruction cannot be embedded into the operator at all."""

    exit_code = EXIT_NO_EMBEDDING


class SolverTimeout(EmbedcspError):
    """The solver hit its time limit before it found any embedding."""

    exit_code = EXIT_TIMEOUT


class ProgramError(EmbedcspError):
    """A program the functional model refuses: race, deadlock, bad index, wrong result."""

    exit_code = EXIT_FAILED
