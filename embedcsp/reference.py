"""The numpy ground truth every compiled program is compared with.

Sums are int32 with two's-complement wrap, as in VTA's accumulator. They are
computed with float64 BLAS in slices small enough that every partial sum is an
integer below 2**53, so the result is exact and the largest DeepBench GEMM
checks in seconds rather than the minutes numpy's integer matmul would take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedcsp.errors import BadInput
from embedcsp.operator import Operator

EPILOGUES = ("wrap", "requant")
MAX_SHIFT = 15  # docs/vta.md section 4 (ALU): the HLS core's SHR amount is 5 signed bits
_EXACT = 2**53
_INT8_PRODUCT = 128 * 128  # the largest |int8 * int8|


@dataclass(frozen=True)
class Epilogue:
    """What happens to the int32 sum on its way out: `wrap` or `requant`."""

    kind: str = "wrap"
    shift: int = 0

    def __post_init__(self) -> None:
        if self.kind not in EPILOGUES:
            raise BadInput(f"unknown epilogue {self.kind!r}: expected one of {', '.join(EPILOGUES)}")
        if not isinstance(self.shift, int) or isinstance(self.shift, bool):
            raise BadInput(f"the requant shift must be a whole number, got {self.shift!r}")
        if self.kind == "requant" and not 0 <= self.shift <= MAX_SHIFT:
            raise BadInput(f"the requant shift must be within 0..{MAX_SHIFT}, got {self.shift}: VTA's "
                           "ALU reads a shift as 5 signed bits, so 16..31 would shift left on hardware")

    def apply(self, acc: np.ndarray) -> np.ndarray:
        if self.kind == "wrap":
            return acc.astype(np.int8)  # keeps the low 8 bits, like VTA STORE
        shifted = acc.astype(np.int32) >> self.shift
        return np.clip(shifted, -128, 127).astype(np.int8)

    def manifest(self) -> dict:
        return {"kind": "wrap"} if self.kind == "wrap" else {"kind": "requant", "shift": self.shift}


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int8 [M,K] @ int8 [K,N] as int64, exactly, via float64 slices over K."""
    k = a.shape[1]
    # Slices bound both exactness (sums < 2**53) and memory (float64 copies of a slice).
    step = max(1, min(k, (_EXACT - 1) // _INT8_PRODUCT, (1 << 26) // max(1, a.shape[0] + b.shape[1])))
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    for k0 in range(0, k, step):
        part = a[:, k0:k0 + step].astype(np.float64) @ b[k0:k0 + step].astype(np.float64)
        out += part.astype(np.int64)
    return out


def _wrap32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.int64).astype(np.int32)


def accumulate(op: Operator, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The int32 accumulator value of every output element."""
    if op.kind == "gemm":
        return _wrap32(_exact_matmul(inputs["A"], inputs["B"]))
    if op.kind == "conv2d":
        return _wrap32(_conv_sum(op, inputs["data"], inputs["weight"]))
    raise ValueError(f"no reference for operator kind {op.kind!r}")


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
