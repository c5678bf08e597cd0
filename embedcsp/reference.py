"""The numpy ground truth every compiled program is compared with.

Sums are int32 with two's-complement wrap, as in VTA's accumulator. They are
computed with float BLAS in slices small enough that every partial sum is an
integer the float type holds exactly, so the result is exact and the largest
DeepBench GEMM checks in seconds rather than the minutes numpy's integer matmul
would take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedcsp import truth
from embedcsp.errors import BadInput
from embedcsp.operator import Operator, operator_from_params

EPILOGUES = ("wrap", "saturate", "requant", "int32")
ROUNDINGS = ("floor", "nearest_even")
# The largest requant shift per rounding: VTA's HLS ALU reads a shift as 5 signed bits
# (docs/vta.md section 4), so 16..31 would shift left; Gemmini's read-out scale 2^-shift is
# exact in float32 for any shift of an int32 sum. "" (the family's rounding) checks the wider.
MAX_SHIFT = {"floor": 15, "nearest_even": 31, "": 31}
_INT8_PRODUCT = 128 * 128  # the largest |int8 * int8|
_F32_TERMS = 2**24 // _INT8_PRODUCT  # 1024 int8 products sum to at most 2^24, exact in float32


@dataclass(frozen=True)
class Epilogue:
    """What happens to the int32 sum on its way out (docs/epilogues.md).

    wrap       the low 8 bits (VTA's STORE of an accumulator)
    saturate   clipped to [-128, 127] (Gemmini's int8 read-out at scale 1)
    requant    divided by 2^shift, rounded (`floor`: an arithmetic shift, VTA's SHR;
               `nearest_even`: float32(sum) x 2^-shift rounded half to even, Gemmini's
               read-out scale), then clipped to [-128, 127]
    int32      the sum itself, as int32
    A requant with rounding "" takes the rounding of the accelerator's family
    (`resolve`); it must be resolved before `apply`.
    """

    kind: str = "wrap"
    shift: int = 0
    rounding: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EPILOGUES:
            raise BadInput(f"unknown epilogue {self.kind!r}: expected one of {', '.join(EPILOGUES)}")
        if not isinstance(self.shift, int) or isinstance(self.shift, bool):
            raise BadInput(f"the requant shift must be a whole number, got {self.shift!r}")
        if self.kind == "requant":
            if self.rounding not in MAX_SHIFT:
                raise BadInput(f"unknown requant rounding {self.rounding!r}: expected one of "
                               f"{', '.join(ROUNDINGS)}")
            limit = MAX_SHIFT[self.rounding]
            if not 0 <= self.shift <= limit:
                why = (": VTA's ALU reads a shift as 5 signed bits, so 16..31 would shift left on hardware"
                       if self.rounding == "floor" else "")
                raise BadInput(f"the requant shift must be within 0..{limit}, got {self.shift}{why}")
        elif self.shift or self.rounding:
            raise BadInput(f"the {self.kind} epilogue takes no shift or rounding")

    @property
    def name(self) -> str:
        """The epilogue as families list what they can do: 'requant/floor', 'wrap', ..."""
        return f"requant/{self.rounding}" if self.kind == "requant" else self.kind

    @property
    def out_dtype(self) -> type:
        return np.int32 if self.kind == "int32" else np.int8

    def resolve(self, supported: tuple[str, ...]) -> Epilogue:
        """This epilogue with the rounding filled in from a family's `supported` names."""
        if self.kind != "requant" or self.rounding:
            return self
        for name in supported:
            kind, _, rounding = name.partition("/")
            if kind == "requant":
                return Epilogue("requant", self.shift, rounding)
        return Epilogue("requant", self.shift, "floor")  # the family refuses it by name

    def apply(self, acc: np.ndarray) -> np.ndarray:
        acc = np.asarray(acc)
        acc = acc if acc.dtype == np.int32 else acc.astype(np.int32)
        if self.kind == "wrap":
            return acc.astype(np.int8)  # two's complement: the low 8 bits
        if self.kind == "int32":
            return acc
        if self.kind == "saturate":
            return np.clip(acc, -128, 127).astype(np.int8)
        if self.rounding == "floor":
            scaled = acc >> self.shift  # numpy's >> on signed ints is arithmetic: floor
        elif self.rounding == "nearest_even":
            # float32 first (which rounds once |sum| > 2^24), then an exact power-of-two
            # scale, then half to even: the order Gemmini's read-out takes.
            scaled = np.rint(acc.astype(np.float32) * np.float32(2.0 ** -self.shift))
        else:
            raise ValueError("a requant epilogue must be resolved to a rounding before it is applied")
        return np.clip(scaled, -128, 127).astype(np.int8)

    def manifest(self) -> dict:
        """The bundle's `epilogue` object (docs/bundle-format.md)."""
        if self.kind == "requant":
            return {"kind": "requant", "shift": self.shift, "rounding": self.rounding}
        return {"kind": self.kind}


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int8 [M,K] @ int8 [K,N] as int64, exactly, via float32 slices of at most 1024 over K.

    Each slice sums at most 1024 products of magnitude <= 2^14, so every partial sum BLAS
    forms, in whatever order, is an integer of magnitude <= 2^24, which float32 holds
    exactly; float32 BLAS runs about twice as fast as float64. The slices add in int64.
    """
    k = a.shape[1]
    # Slices bound both exactness and memory (float32 copies of a slice).
    step = max(1, min(k, _F32_TERMS, (1 << 27) // max(1, a.shape[0] + b.shape[1])))
    out = None
    for k0 in range(0, k, step):
        part = a[:, k0:k0 + step].astype(np.float32) @ b[k0:k0 + step].astype(np.float32)
        if out is None:
            out = part.astype(np.int64)
        else:
            out += part.astype(np.int32)  # exact: |part| <= 2^24
    return out if out is not None else np.zeros((a.shape[0], b.shape[1]), np.int64)


def _wrap32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.int32) if x.dtype == np.int64 else x.astype(np.int64).astype(np.int32)


def accumulate(op: Operator, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The int32 accumulator value of every output element.

    The operator's statement decides (embedcsp/truth.py, which reads only its access maps).
    The fast GEMM and conv2d paths below serve only an operator that is exactly what its
    kind and parameters build (tests/test_truth.py checks the two agree), so an operator
    whose maps say something else (a dilated conv labelled conv2d) gets its own semantics.
    """
    if op.kind in ("gemm", "conv2d") and _is_canonical(op):
        if op.kind == "gemm":
            return _wrap32(_exact_matmul(inputs["A"], inputs["B"]))
        return _wrap32(_conv_sum(op, inputs["data"], inputs["weight"]))
    return truth.accumulate(op, inputs)


def _is_canonical(op: Operator) -> bool:
    try:
        return operator_from_params(op.kind, op.param_dict) == op
    except (BadInput, KeyError):
        return False


def _conv_sum(op: Operator, data: np.ndarray, weight: np.ndarray) -> np.ndarray:
    prm = op.param_dict
    n, c, _, _ = data.shape
    k, _, r, s = weight.shape
    sh, sw, ph, pw = prm["stride_h"], prm["stride_w"], prm["pad_h"], prm["pad_w"]
    p, q = op.extents["p"], op.extents["q"]
    padded = np.pad(data, ((0, 0), (0, 0), (ph, ph), (pw, pw))).astype(np.float64)
    out = np.zeros((n, k, p, q), dtype=np.int64)
    # One tap at a time keeps every partial sum below C * 2**14, far under 2**53.
    for rr in range(r):
        for ss in range(s):
            window = padded[:, :, rr:rr + sh * (p - 1) + 1:sh, ss:ss + sw * (q - 1) + 1:sw]
            tap = weight[:, :, rr, ss].astype(np.float64)  # [K, C]
            out += np.einsum("nchw,kc->nkhw", window, tap, optimize=True).astype(np.int64)
    return out


def reference_output(op: Operator, inputs: dict[str, np.ndarray], epilogue: Epilogue) -> np.ndarray:
    return epilogue.apply(accumulate(op, inputs))


def random_inputs(op: Operator, seed: int) -> dict[str, np.ndarray]:
    """Uniform int8 over the whole range, so every bit of the datapath is exercised."""
    rng = np.random.default_rng(seed)
    return {t.name: rng.integers(-128, 128, size=t.shape, dtype=np.int8) for t in op.inputs}
