"""The VTA family (docs/vta.md): VTA's GEMM core and its variants, described by the ten
vta_config numbers of an ISA file.

    config.py      the description and what derives from it; the ISA file loader
    encoding.py    instructions and micro-ops at bit level (the compiler's writer)
    plan.py, steps.py, hazard.py, codegen.py, direct.py
                   tiling, tile steps and slots, the GEMM hazard, code generation
                   (packed-matrix form and direct conv form)
    decode.py, functional.py
                   the functional model's own reader of binaries, and the model
    timing.py      the cycle model and the roofline
"""

from __future__ import annotations

from embedcsp.accelerator import Accelerator
from embedcsp.targets.vta.config import vta_from_dict


class VtaFamily:
    """What the registry hands out for `family = "vta"`."""

    name = "vta"

    def load(self, doc: dict, source: str) -> Accelerator:
        """An ISA file's tables ([accelerator], [vta_config], [intrinsic]) to an Accelerator."""
        return vta_from_dict(doc, source)


FAMILY = VtaFamily()
