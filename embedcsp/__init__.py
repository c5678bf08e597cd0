"""embedcsp: program deep learning accelerators by constraint solving.

The few names a user needs (README.md, "From Python"):

    load_accelerator, vta_accelerator, VtaConfig   describe the hardware
    gemm, conv2d                                    build an operator
    Options, Epilogue                               how to compile it
    compile_operator                                solve, plan and generate a program
    run                                             execute it on your tensors and check it
    solve_and_verify                                compile, check on random data and cost
    write_bundle, read_bundle, run_bundle           the program bundle (docs/bundle-format.md)
    EmbedcspError (and its kinds)                   errors with documented exit codes

Everything else is reachable through its module; these names are the stable API.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from embedcsp.__about__ import __version__
from embedcsp.accelerator import Accelerator, load_accelerator
from embedcsp.bundle import Bundle, BundleRun, check_inputs, read_bundle, run_bundle
from embedcsp.bundle import write_bundle as _write_bundle
from embedcsp.einsum import einsum
from embedcsp.errors import (
    BadInput,
    EmbedcspError,
    IsaError,
    NoEmbedding,
    ProgramError,
    SolverTimeout,
)
from embedcsp.operator import Operator, conv2d, gemm
from embedcsp.ops import bmm, conv2d_general
from embedcsp.pipeline import (
    Compiled,
    Options,
    Outcome,
    compile_operator,
    host_transforms,
    solve_and_verify,
)
from embedcsp.reference import Epilogue, random_inputs
from embedcsp.targets.vta.config import VtaConfig, vta_accelerator
from embedcsp.verify import ProgramRun, Verification, run_program

__all__ = [
    "Accelerator", "BadInput", "Bundle", "BundleRun", "Compiled", "EmbedcspError", "Epilogue",
    "IsaError", "NoEmbedding", "Operator", "Options", "Outcome", "ProgramError", "ProgramRun",
    "SolverTimeout", "Verification", "VtaConfig", "__version__", "bmm", "compile_operator", "conv2d",
    "conv2d_general", "einsum",
    "gemm", "load_accelerator", "read_bundle", "run", "run_bundle", "solve_and_verify",
    "vta_accelerator", "write_bundle",
]


def run(compiled: Compiled, inputs: Mapping[str, np.ndarray]) -> ProgramRun:
    """Execute a compiled program on your own input tensors and check every output.

    `inputs` maps each input tensor name (gemm: A, B; conv2d: data, weight) to an
    array of its logical shape with int8 values; anything else raises BadInput.
    The program runs as a binary in the functional model; the result holds the
    outputs by tensor name and the bit-exact comparison with the ground truth.
    """
    return run_program(compiled, check_inputs(compiled.operator, inputs))


def write_bundle(compiled: Compiled, out: str | Path, inputs: Mapping[str, np.ndarray] | None = None,
                 seed: int = 0) -> ProgramRun:
    """Run `compiled` on `inputs` (random int8 from `seed` if None), then write its bundle to `out`.

    The bundle's dram.bin holds those inputs; a failed check is written and marked
    as failed (docs/bundle-format.md). Returns the run that was recorded.
    """
    op = compiled.operator
    data = check_inputs(op, inputs) if inputs is not None else random_inputs(op, seed)
    result = run(compiled, data)
    _write_bundle(Path(out), compiled, data, seed, result.verification, host_transforms(compiled))
    return result
