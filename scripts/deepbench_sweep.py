#!/usr/bin/env python3
"""`embedcsp bench` under its old name, kept because earlier issues and notes run it.

    python scripts/deepbench_sweep.py --suite gemm --jobs 2 --out bench/

Same options, outputs and exit codes as `embedcsp bench` (see `embedcsp bench
--help`; the implementation is `embedcsp/bench.py`), except that the suite
defaults to gemm, as it always did here. An --out ending in .csv (its old
meaning: the CSV file) is read as that file's directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from embedcsp.cli import main


def bench_argv(args: list[str]) -> list[str]:
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--out" and i + 1 < len(args) and args[i + 1].endswith(".csv"):
            args[i + 1] = str(Path(args[i + 1]).parent)
        elif arg.startswith("--out=") and arg.endswith(".csv"):
            args[i] = "--out=" + str(Path(arg.removeprefix("--out=")).parent)
    return ["bench", "--suite", "gemm", *args]  # a later --suite wins


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *bench_argv(sys.argv[1:])]
    main()
