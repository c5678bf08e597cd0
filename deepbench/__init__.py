"""Baidu DeepBench inference workloads, shipped as data so runs are reproducible offline.

The rows come from DeepBench `gemm_problems.h` / `conv_problems.h` (`inference_server_set`
and `inference_device_set`); see `/work/shared/deepbench.md` for provenance. Each operator
has a stable name such as ``gemm-server-2`` or ``conv-device-11`` (1-based row within its
table) so that the CLI, reports and tests can all refer to the same shape.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import re
from dataclasses import dataclass
from importlib.resources import files

from embedcsp.errors import BadInput
from embedcsp.operator import Operator, conv2d, gemm

__all__ = [
    "SUITES",
    "GemmProblem",
    "ConvProblem",
    "gemm_problems",
    "conv_problems",
    "all_problems",
    "lookup",
]

#: Suites in listing order: NVIDIA/Intel use the server set, ARM the device set.
SUITES: tuple[str, ...] = ("server", "device")

_NAME_RE = re.compile(r"(gemm|conv)-(server|device)-(\d+)")
_LIST_HINT = "list them with 'embedcsp deepbench list'"


@dataclass(frozen=True)
class GemmProblem:
    """One inference GEMM, C(M x N) = A(M x K) . B(K x N), both operands untransposed.

    DeepBench lists every inference GEMM as NN, so no transpose flags are kept.
    """

    suite: str
    index: int
    m: int
    n: int
    k: int

    @property
    def name(self) -> str:
        """Stable identifier used by the CLI and in reports, e.g. ``gemm-server-2``."""
        return f"gemm-{self.suite}-{self.index}"

    def operator(self) -> Operator:
        return gemm(self.m, self.n, self.k)


@dataclass(frozen=True)
class ConvProblem:
    """One inference conv2d in DeepBench's tuple order.

    W, H are the input width/height, C input channels, N batch, K output channels,
    S the filter width and R the filter height. ``dup_of`` is the row this one repeats
    within the same suite (DeepBench lists a few shapes twice), so callers can skip
    redundant work without losing the original numbering.
    """

    suite: str
    index: int
    w: int
    h: int
    c: int
    n: int
    k: int
    s: int
    r: int
    pad_w: int
    pad_h: int
    stride_w: int
    stride_h: int
    dup_of: int | None

    @property
    def name(self) -> str:
        """Stable identifier used by the CLI and in reports, e.g. ``conv-server-1``."""
        return f"conv-{self.suite}-{self.index}"

    def operator(self) -> Operator:
        return conv2d(self.n, self.c, self.h, self.w, self.k, self.r, self.s,
                      self.pad_h, self.pad_w, self.stride_h, self.stride_w)

    @property
    def out_h(self) -> int:
        """Output height (DeepBench's Q), derived so it can never disagree with the input."""
        return (self.h + 2 * self.pad_h - self.r) // self.stride_h + 1

    @property
    def out_w(self) -> int:
        """Output width (DeepBench's P), derived so it can never disagree with the input."""
        return (self.w + 2 * self.pad_w - self.s) // self.stride_w + 1


def _read_rows(filename: str) -> list[dict[str, str]]:
    """Read a packaged CSV through importlib.resources so it works from wheels and zips."""
    text = files(__name__).joinpath(filename).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@functools.cache
def _all_gemm() -> tuple[GemmProblem, ...]:
    return tuple(
        GemmProblem(
            suite=row["suite"],
            index=int(row["index"]),
            m=int(row["m"]),
            n=int(row["n"]),
            k=int(row["k"]),
        )
        for row in _read_rows("gemm.csv")
    )


_CONV_INT_FIELDS = ("w", "h", "c", "n", "k", "s", "r", "pad_w", "pad_h", "stride_w", "stride_h")


@functools.cache
def _all_conv() -> tuple[ConvProblem, ...]:
    problems = []
    for row in _read_rows("conv.csv"):
        dup = row["dup_of"].strip()
        problems.append(
            ConvProblem(
                suite=row["suite"],
                index=int(row["index"]),
                **{f: int(row[f]) for f in _CONV_INT_FIELDS},
                dup_of=int(dup) if dup else None,
            )
        )
    return tuple(problems)


def _check_suite(suite: str | None) -> str | None:
    """Normalise a suite argument; reject anything that would silently list nothing."""
    if suite is None:
        return None
    if isinstance(suite, str) and suite.strip().lower() in SUITES:
        return suite.strip().lower()
    raise BadInput(f"unknown DeepBench suite {suite!r}: expected 'server' or 'device'")


def gemm_problems(suite: str | None = None) -> tuple[GemmProblem, ...]:
    """The inference GEMMs in table order (server set first), optionally one suite only."""
    wanted = _check_suite(suite)
    everything = _all_gemm()
    if wanted is None:
        return everything
    return tuple(p for p in everything if p.suite == wanted)


def conv_problems(suite: str | None = None) -> tuple[ConvProblem, ...]:
    """The inference convolutions in table order (server set first), duplicates included."""
    wanted = _check_suite(suite)
    everything = _all_conv()
    if wanted is None:
        return everything
    return tuple(p for p in everything if p.suite == wanted)


def all_problems() -> tuple[GemmProblem | ConvProblem, ...]:
    """Every inference operator: all GEMMs, then all convolutions."""
    return _all_gemm() + _all_conv()


@functools.cache
def _by_name() -> dict[str, GemmProblem | ConvProblem]:
    return {p.name: p for p in all_problems()}


def lookup(name: str) -> GemmProblem | ConvProblem:
    """Find an operator by name (case-insensitive, whitespace-tolerant) for CLI arguments.

    Raises `BadInput` with a one-line message naming the valid range or close matches.
    """
    if not isinstance(name, str):
        raise BadInput(f"DeepBench operator name must be a string, got {name!r}")
    key = name.strip().lower()
    table = _by_name()
    match = _NAME_RE.fullmatch(key)
    if match:
        kind, suite, number = match.group(1), match.group(2), int(match.group(3))
        found = table.get(f"{kind}-{suite}-{number}")
        if found is not None:
            return found
        rows = len(gemm_problems(suite) if kind == "gemm" else conv_problems(suite))
        raise BadInput(
            f"unknown DeepBench operator {name.strip()!r}: "
            f"{kind}-{suite} has rows 1..{rows} ({_LIST_HINT})"
        )
    close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else _LIST_HINT
    raise BadInput(
        f"malformed DeepBench operator name {name.strip()!r}: "
        f"expected gemm-<server|device>-N or conv-<server|device>-N; {hint}"
    )
