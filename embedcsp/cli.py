"""The `embedcsp` command line.

Exit codes
  0  the program was verified bit-exact (or the command succeeded)
  1  verification failed, or an internal error
  2  bad input: shapes, names, files, options
  3  the instruction cannot be embedded into the operator
  4  the solver hit its time limit before finding any embedding
"""

from __future__ import annotations

import json
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from embedcsp import bench, deepbench, networks
from embedcsp.__about__ import __version__
from embedcsp.accelerator import load_accelerator
from embedcsp.bundle import read_bundle, run_bundle, write_bundle
from embedcsp.einsum import einsum, parse_extents, parse_shapes
from embedcsp.errors import EXIT_FAILED, BadInput, EmbedcspError
from embedcsp.network import compile_cmd
from embedcsp.operator import Operator, gemm
from embedcsp.ops import bmm, conv2d_general
from embedcsp.pipeline import Options, check_seed, check_time_limit, solve_and_verify
from embedcsp.progress import SILENT, Progress, TerminalProgress
from embedcsp.reference import MAX_SHIFT, Epilogue
from embedcsp.report import outcome_dict, outcome_text
from embedcsp.targets.registry import family

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Program deep learning accelerators by constraint solving (CP-SAT), "
                       "with every program verified bit-exact in a functional model.")
solve_app = typer.Typer(no_args_is_help=True, help="Solve one operator into verified VTA code.")
deepbench_app = typer.Typer(no_args_is_help=True, help="The Baidu DeepBench inference operators.")
app.add_typer(solve_app, name="solve")
app.add_typer(deepbench_app, name="deepbench")
isa_app = typer.Typer(no_args_is_help=True, help="Accelerator descriptions (ISA files, docs/isa-files.md).")
app.add_typer(isa_app, name="isa")
app.command("compile")(compile_cmd)  # embedcsp/network.py: whole ONNX models


class EpilogueKind(str, Enum):
    wrap = "wrap"
    saturate = "saturate"
    requant = "requant"
    int32 = "int32"


class Rounding(str, Enum):
    floor = "floor"
    nearest_even = "nearest_even"


class Strategy(str, Enum):
    csp = "csp"
    reference = "reference"


class Suite(str, Enum):
    gemm = "gemm"
    conv = "conv"
    all = "all"
    resnet18 = "resnet18"  # the network suites (embedcsp/networks.py, docs/networks.md)
    resnet50 = "resnet50"
    mobilenetv2 = "mobilenetv2"
    bert_base = "bert-base"
    mlperf_tiny = "mlperf-tiny"


# Options shared by every `solve` command.
IsaOpt = typer.Option(None, "--isa", help="Accelerator TOML file (default: the shipped VTA).")
OutOpt = typer.Option(None, "--out", help="Write the program bundle to this directory.")
TimeOpt = typer.Option(10.0, "--time-limit", help="Solver time limit in seconds.")
SeedOpt = typer.Option(0, "--seed", help="Solver seed and random-input seed.")
EpiOpt = typer.Option(None, "--epilogue", show_default=False,
                      help="wrap: low 8 bits; saturate: clip to int8; requant: clip(round(sum / 2^shift)); "
                           "int32: the sum itself. Default: the family's first (VTA wrap, Gemmini saturate, "
                           "tile int32). docs/epilogues.md.")
ShiftOpt = typer.Option(8, "--shift", help="Right shift of the requant epilogue (0..15).")
RoundOpt = typer.Option(None, "--rounding", show_default=False,
                        help="Rounding of requant: floor (VTA's shift) or nearest_even (Gemmini's scale). "
                             "Default: the family's.")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")
StrategyOpt = typer.Option(Strategy.csp, "--strategy",
                           help="csp: the solver chooses; reference: VTA's fixed TVM layout (gemm only).")
PlaceOpt = typer.Option(True, "--placements/--no-placements",
                        help="Strategy csp: also cost the placements beyond whole dims (banded, block-diagonal; "
                             "docs/placements.md).")
BoardOpt = typer.Option(None, "--board", show_default=False,
                        help="Board of the cycle model. VTA: pynq (64-bit bus, 100 MHz, the default) or "
                             "ultra96; Gemmini: chipyard; tile: generic. `embedcsp isa show` lists them.")


def _progress(as_json: bool) -> Progress:
    """Stages and a verification bar on stderr, only for a person watching a terminal."""
    if as_json or not sys.stderr.isatty():
        return SILENT
    from rich.console import Console

    return TerminalProgress(Console(stderr=True))


def _fail(exc: EmbedcspError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def _epilogue(kind: Optional[EpilogueKind], shift: int, rounding: Optional[Rounding]) -> Epilogue | None:
    """The command line's epilogue; None leaves it to the family (pipeline.family_epilogue)."""
    if rounding is not None and kind != EpilogueKind.requant:
        raise BadInput("--rounding applies to --epilogue requant only")
    if kind is None:
        return None
    if kind != EpilogueKind.requant:
        return Epilogue(kind.value)
    return Epilogue("requant", shift, rounding.value if rounding is not None else "")


def _solve(op_factory, isa: Optional[Path], out: Optional[Path], time_limit: float, seed: int,
           epilogue: Optional[EpilogueKind], shift: int, rounding: Optional[Rounding], as_json: bool,
           board_name: Optional[str],
           strategy: Strategy, placements: bool = True) -> None:
    try:
        check_time_limit(time_limit)
        check_seed(seed)
        limit = MAX_SHIFT["floor" if rounding == Rounding.floor else ""]
        if not 0 <= shift <= limit:
            raise BadInput(f"--shift must be within 0..{limit}, got {shift}")
        if out is not None and out.exists() and not out.is_dir():
            raise BadInput(f"--out {str(out)!r} exists and is not a directory")
        op: Operator = op_factory()
        acc = load_accelerator(isa)
        options = Options(time_limit=time_limit, seed=seed, strategy=strategy.value, board=board_name,
                          epilogue=_epilogue(epilogue, shift, rounding), placements=placements)
        # Refuse an unknown board before any work.
        family(acc.family).check_board(board_name or family(acc.family).default_board)
        progress = _progress(as_json)
        try:
            outcome = solve_and_verify(op, acc, options, seed, progress)
            if out is not None:
                progress.stage("writing the bundle")
                write_bundle(out, outcome.compiled, outcome.inputs, seed, outcome.verification,
                             outcome.transforms)
        finally:
            progress.close()
    except EmbedcspError as exc:
        _fail(exc)
    if as_json:
        doc = outcome_dict(outcome)
        if out is not None:
            doc["bundle"] = str(out)
        typer.echo(json.dumps(doc, indent=2))
    else:
        for line in outcome_text(outcome):
            typer.echo(line)
        if out is not None:
            typer.echo(f"bundle     {out}/ (manifest.json, program.bin, dram.bin, layout.npz)")
    raise typer.Exit(0 if outcome.verification.ok else EXIT_FAILED)


@solve_app.command("gemm")
def solve_gemm(
    m: int = typer.Option(..., "--m", help="Rows of A and C (DeepBench M)."),
    n: int = typer.Option(..., "--n", help="Columns of B and C (DeepBench N)."),
    k: int = typer.Option(..., "--k", help="The reduction (DeepBench K)."),
    isa: Optional[Path] = IsaOpt, out: Optional[Path] = OutOpt, time_limit: float = TimeOpt,
    seed: int = SeedOpt, epilogue: Optional[EpilogueKind] = EpiOpt, shift: int = ShiftOpt,
    rounding: Optional[Rounding] = RoundOpt, as_json: bool = JsonOpt,
    board_name: Optional[str] = BoardOpt, strategy: Strategy = StrategyOpt,
    placements: bool = PlaceOpt,
) -> None:
    """C[M,N] = A[M,K] @ B[K,N], int8 x int8 summed in int32."""
    _solve(lambda: gemm(m, n, k), isa, out, time_limit, seed, epilogue, shift, rounding, as_json, board_name, strategy, placements)


@solve_app.command("conv2d")
def solve_conv2d(
    n: int = typer.Option(..., "--n", help="Batch."),
    c: int = typer.Option(..., "--c", help="Input channels."),
    h: int = typer.Option(..., "--h", help="Input height."),
    w: int = typer.Option(..., "--w", help="Input width."),
    k: int = typer.Option(..., "--k", help="Output channels."),
    r: int = typer.Option(..., "--r", help="Filter height."),
    s: int = typer.Option(..., "--s", help="Filter width."),
    pad: Optional[int] = typer.Option(None, "--pad", help="Padding on both axes."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Stride on both axes."),
    pad_h: Optional[int] = typer.Option(None, "--pad-h"), pad_w: Optional[int] = typer.Option(None, "--pad-w"),
    stride_h: Optional[int] = typer.Option(None, "--stride-h"),
    stride_w: Optional[int] = typer.Option(None, "--stride-w"),
    groups: int = typer.Option(1, "--groups", help="Groups (C and K divisible); depthwise: groups = C = K."),
    dilation: Optional[int] = typer.Option(None, "--dilation", help="Dilation on both axes."),
    dilation_h: Optional[int] = typer.Option(None, "--dilation-h"),
    dilation_w: Optional[int] = typer.Option(None, "--dilation-w"),
    pad_top: Optional[int] = typer.Option(None, "--pad-top", help="Asymmetric padding, as ONNX allows "
                                                                  "(with --pad-bottom/--pad-left/--pad-right)."),
    pad_bottom: Optional[int] = typer.Option(None, "--pad-bottom"),
    pad_left: Optional[int] = typer.Option(None, "--pad-left"),
    pad_right: Optional[int] = typer.Option(None, "--pad-right"),
    isa: Optional[Path] = IsaOpt, out: Optional[Path] = OutOpt, time_limit: float = TimeOpt,
    seed: int = SeedOpt, epilogue: Optional[EpilogueKind] = EpiOpt, shift: int = ShiftOpt,
    rounding: Optional[Rounding] = RoundOpt, as_json: bool = JsonOpt,
    board_name: Optional[str] = BoardOpt, strategy: Strategy = StrategyOpt,
    placements: bool = PlaceOpt,
) -> None:
    """out[n,k,p,q] += data[n,c,p*sh+r*dh-top,q*sw+s*dw-left] * weight[k,c,r,s], zero padding; with
    --groups the tensors are the grouped views [N,G,C/G,H,W], [G,K/G,C/G,R,S], [N,G,K/G,P,Q]."""
    def make() -> Operator:
        ph, pw = _pick("pad", pad, pad_h, pad_w, 0)
        sides = (pad_top, pad_bottom, pad_left, pad_right)
        if any(x is not None for x in sides) and (pad is not None or pad_h is not None or pad_w is not None):
            raise BadInput("give either --pad/--pad-h/--pad-w or --pad-top/--pad-bottom/--pad-left/--pad-right")
        pads = tuple(d if x is None else x for x, d in zip(sides, (ph, ph, pw, pw)))
        sh, sw = _pick("stride", stride, stride_h, stride_w, 1)
        dh, dw = _pick("dilation", dilation, dilation_h, dilation_w, 1)
        return conv2d_general(n, c, h, w, k, r, s, groups=groups, stride=(sh, sw), dilation=(dh, dw), pads=pads)
    _solve(make, isa, out, time_limit, seed, epilogue, shift, rounding, as_json, board_name, strategy, placements)


@solve_app.command("bmm")
def solve_bmm(
    b: int = typer.Option(..., "--b", help="Batch (e.g. attention heads)."),
    m: int = typer.Option(..., "--m", help="Rows of A and C."),
    n: int = typer.Option(..., "--n", help="Columns of B and C."),
    k: int = typer.Option(..., "--k", help="The reduction."),
    isa: Optional[Path] = IsaOpt, out: Optional[Path] = OutOpt, time_limit: float = TimeOpt,
    seed: int = SeedOpt, epilogue: Optional[EpilogueKind] = EpiOpt, shift: int = ShiftOpt,
    rounding: Optional[Rounding] = RoundOpt, as_json: bool = JsonOpt,
    board_name: Optional[str] = BoardOpt, strategy: Strategy = StrategyOpt,
    placements: bool = PlaceOpt,
) -> None:
    """C[b,m,n] += A[b,m,k] * B[b,k,n]: B independent GEMMs."""
    _solve(lambda: bmm(b, m, n, k), isa, out, time_limit, seed, epilogue, shift, rounding, as_json,
           board_name, strategy, placements)


def _pick(name: str, both: Optional[int], h: Optional[int], w: Optional[int], default: int) -> tuple[int, int]:
    if both is not None and (h is not None or w is not None):
        raise BadInput(f"give either --{name} or --{name}-h/--{name}-w, not both")
    if both is not None:
        return both, both
    return (default if h is None else h), (default if w is None else w)


@solve_app.command("einsum")
def solve_einsum(
    statement: str = typer.Argument(..., help="out[...] += a[...] * b[...], indices affine in the dims, "
                                                "e.g. 'out[n,k,p,q] += data[n,c,2*p+r-1,2*q+s-1] * weight[k,c,r,s]'."),
    dims: str = typer.Option(..., "--dims", help="Extent of every dim: n=1,k=64,p=28,..."),
    shape: Optional[str] = typer.Option(None, "--shape", help="Shapes of tensors not indexed by plain dims: "
                                                              "data=1x64x56x56,..."),
    isa: Optional[Path] = IsaOpt, out: Optional[Path] = OutOpt, time_limit: float = TimeOpt,
    seed: int = SeedOpt, epilogue: Optional[EpilogueKind] = EpiOpt, shift: int = ShiftOpt,
    rounding: Optional[Rounding] = RoundOpt, as_json: bool = JsonOpt,
    board_name: Optional[str] = BoardOpt, strategy: Strategy = StrategyOpt,
    placements: bool = PlaceOpt,
) -> None:
    """Any affine operator from one statement: reads outside a tensor are zero (docs/operators.md)."""
    def make() -> Operator:
        return einsum(statement, parse_extents(dims, "--dims"), parse_shapes(shape))

    _solve(make, isa, out, time_limit, seed, epilogue, shift, rounding, as_json, board_name, strategy, placements)


@solve_app.command("deepbench")
def solve_deepbench(
    name: str = typer.Argument(..., help="gemm-server-N, gemm-device-N, conv-server-N or conv-device-N."),
    isa: Optional[Path] = IsaOpt, out: Optional[Path] = OutOpt, time_limit: float = TimeOpt,
    seed: int = SeedOpt, epilogue: Optional[EpilogueKind] = EpiOpt, shift: int = ShiftOpt,
    rounding: Optional[Rounding] = RoundOpt, as_json: bool = JsonOpt,
    board_name: Optional[str] = BoardOpt, strategy: Strategy = StrategyOpt,
    placements: bool = PlaceOpt,
) -> None:
    """Solve a DeepBench inference operator by name (see `embedcsp deepbench list`)."""
    _solve(lambda: deepbench_operator(name), isa, out, time_limit, seed, epilogue, shift, rounding, as_json, board_name, strategy, placements)


def deepbench_operator(name: str) -> Operator:
    return deepbench.lookup(name).operator()


def _dim_kind(pattern, dim: str) -> str:
    """Which operands a pattern dim indexes, in the CSP's terms."""
    out, (a, b) = pattern.output, pattern.inputs
    if dim in out.dims and dim in a.dims and dim in b.dims:
        return "batched: indexes every operand"
    if dim in out.dims:
        return f"spatial: indexes {out.name} and {a.name if dim in a.dims else b.name}"
    return f"reduction: indexes {a.name} and {b.name}"


@isa_app.command("show")
def isa_show(file: Optional[Path] = typer.Argument(None, help="An ISA file (default: the shipped VTA)."),
             as_json: bool = JsonOpt) -> None:
    """Print what embedcsp derives from an accelerator description."""
    try:
        acc = load_accelerator(file)
        lines = family(acc.family).describe(acc)
    except EmbedcspError as exc:
        _fail(exc)
    p = acc.pattern
    if as_json:
        typer.echo(json.dumps({"description": acc.description(), "sha256": acc.digest,
                               "derived": lines}, indent=2))
        return
    typer.echo(f"accelerator {acc.name} (family {acc.family}, {acc.config.tag()}), from {acc.source}")
    typer.echo(f"sha256     {acc.digest}")
    typer.echo(f"instruction {p.statement()}: {p.macs} MACs")
    for dim, extent in p.lanes:
        typer.echo(f"  lane {dim} = {extent:5d}  {_dim_kind(p, dim)}")
    for line in lines:
        typer.echo(line)


@isa_app.command("check")
def isa_check(files: list[Path] = typer.Argument(..., help="ISA files to validate.")) -> None:
    """Validate ISA files: one line each, exit 2 on the first that is refused."""
    for file in files:
        try:
            acc = load_accelerator(file)
            family(acc.family).describe(acc)
        except EmbedcspError as exc:
            _fail(exc)
        typer.echo(f"ok         {file}: {acc.name} (family {acc.family}, {acc.config.tag()}, "
                   f"sha256 {acc.digest[:12]})")


@deepbench_app.command("list")
def deepbench_list(suite: Suite = typer.Option(Suite.all, "--suite",
                                                help="gemm, conv or all, or a network suite.")) -> None:
    """List the DeepBench inference operators with their shapes (or a network's layers, with counts)."""
    if suite.value in networks.NETWORKS:
        for layer in networks.layers(suite.value):
            shape = " ".join(f"{k}={v}" for k, v in layer.shape)
            typer.echo(f"{layer.name:28s} x{layer.count:<3d} {layer.op} {shape}")
        return
    if suite in (Suite.gemm, Suite.all):
        for p in deepbench.gemm_problems():
            typer.echo(f"{p.name:16s} M={p.m} N={p.n} K={p.k}")
    if suite in (Suite.conv, Suite.all):
        for p in deepbench.conv_problems():
            dup = f"  (duplicate of {p.suite} {p.dup_of})" if p.dup_of else ""
            typer.echo(f"{p.name:16s} N={p.n} C={p.c} H={p.h} W={p.w} K={p.k} R={p.r} S={p.s} "
                       f"pad={p.pad_h},{p.pad_w} stride={p.stride_h},{p.stride_w}{dup}")


@app.command("run")
def run_cmd(
    bundle: Path = typer.Argument(..., help="A bundle directory written by `solve --out`."),
    seed: int = typer.Option(1, "--seed", help="Seed of the fresh random inputs (without --inputs)."),
    inputs: Optional[Path] = typer.Option(
        None, "--inputs", help="npz with one int8 array per input tensor (gemm: A, B; conv2d: data, weight)."),
    dump: Optional[Path] = typer.Option(
        None, "--dump", help="Write the outputs and the inputs used to this npz file."),
    as_json: bool = JsonOpt,
) -> None:
    """Re-execute a bundle on fresh random inputs (or --inputs) and check it against numpy."""
    from embedcsp.bundle import check_dump_target, load_inputs, write_dump

    try:
        check_seed(seed)
        if dump is not None:
            check_dump_target(dump)
        b = read_bundle(bundle)
        given = None if inputs is None else load_inputs(inputs, b.operator)
        if b.failed:
            typer.echo(f"warning: {bundle} was written by a failed verification (manifest status "
                       f"{b.status!r}, see FAILED); running it anyway", err=True)
        result = run_bundle(b, seed, given)
        if dump is not None:
            write_dump(dump, result)
    except EmbedcspError as exc:
        _fail(exc)
    v = result.verification
    source = f"inputs {inputs}" if inputs is not None else f"seed {seed}"
    if as_json:
        typer.echo(json.dumps({"bundle": str(bundle), "status": b.status, "seed": result.seed,
                               "inputs": None if inputs is None else str(inputs),
                               "dump": None if dump is None else str(dump),
                               "provenance": b.provenance, **v.as_dict()}, indent=2))
    elif v.ok:
        typer.echo(f"verified   {b.operator.describe()}: {v.checked} outputs bit-exact "
                   f"({len(b.program)} instructions, {v.counters.gemm_uops} matrix operations executed, {source}, "
                   f"{v.seconds:.2f} s)")
    else:
        typer.echo(f"FAILED     {v.mismatches} of {v.checked} outputs differ ({source}); "
                   f"first: {v.first_mismatch}")
    if dump is not None and not as_json:
        typer.echo(f"dump       {dump} ({', '.join([*result.inputs, *result.outputs])})")
    raise typer.Exit(0 if v.ok else EXIT_FAILED)


class BenchEngine(str, Enum):
    local = "local"
    ray = "ray"


@app.command("bench")
def bench_cmd(
    names: Optional[list[str]] = typer.Argument(None, show_default=False,
                                                help="Operator names, as with --only."),
    suite: Suite = typer.Option(Suite.all, "--suite", help="gemm, conv or all (DeepBench), or a network: "
                                "resnet18, resnet50, mobilenetv2, bert-base, mlperf-tiny (docs/networks.md)."),
    only: Optional[list[str]] = typer.Option(None, "--only", show_default=False,
                                             help="Just these operators (repeat it, or list names after it)."),
    jobs: int = typer.Option(2, "--jobs", help="Worker processes (one per core); with --engine ray and no "
                                               "--address, the CPUs of the local Ray instance."),
    board_name: Optional[str] = BoardOpt,
    out: Path = typer.Option(Path("bench"), "--out",
                             help="Directory for deepbench_<suite>.* (whole suite) or deepbench_subset-<hash>.* "
                                  "(named operators): .csv/.json/.md/.png. Files of another selection "
                                  "(operators, ISA, board, seed) are never overwritten."),
    isa: Optional[Path] = IsaOpt, time_limit: float = TimeOpt, seed: int = SeedOpt,
    store: Optional[Path] = typer.Option(None, "--store", show_default=False,
                                         help="Results store (SQLite) rows are kept in as they finish; "
                                              "a rerun takes them from there. Default: <--out>/results.sqlite."),
    fresh: bool = typer.Option(False, "--fresh", help="Recompute every operator and replace its stored row."),
    engine: BenchEngine = typer.Option(BenchEngine.local, "--engine",
                                       help="local (worker processes) or ray (Ray tasks; pip install "
                                            "'embedcsp[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", show_default=False,
                                          help="Ray cluster to run on (ray.init(address=...)); without it "
                                               "--engine ray starts a local Ray instance."),
) -> None:
    """DeepBench with both strategies, each verified bit-exact: speedups over VTA's TVM mapping."""
    from rich.console import Console

    cfg = bench.BenchConfig(suite=suite.value, only=(*(only or []), *(names or [])), jobs=jobs,
                            board=board_name, out=out, isa=None if isa is None else str(isa),
                            time_limit=time_limit, seed=seed, store=store, fresh=fresh, engine=engine.value,
                            address=address)
    try:
        check_seed(seed)
        result = bench.run(cfg, Console(stderr=True))  # the bar on stderr, the summary on stdout
    except EmbedcspError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: the operators finished so far are stored in {cfg.store_path()}; "
                   "the same command resumes from there", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    for line in bench.summary_lines(result.summary, result.title):
        typer.echo(line)
    typer.echo(f"results store {result.store}: {result.from_store} of {len(result.rows)} rows from the store, "
               f"{len(result.rows) - result.from_store} computed by this run")
    if result.note:
        typer.echo(f"note: {result.note}")
    typer.echo("wrote " + ", ".join(str(f) for f in result.files))
    raise typer.Exit(0 if result.ok else EXIT_FAILED)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"embedcsp {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Program deep learning accelerators by constraint solving (CP-SAT), with every program
    verified bit-exact in a functional model. Exit codes: docs/exit-codes.md."""


def main() -> None:
    try:
        app()
    except EmbedcspError as exc:  # raised outside a command body
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_FAILED)
    except Exception:  # a bug: say so, keep the trace for the report
        typer.echo("internal error (please report it with the trace below):", err=True)
        traceback.print_exc()
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
