"""VTA's layout forms for the embedding CSP (docs/targets.md, "Layout forms").

The packed matrix form is the CSP's own. The direct conv form (code in
targets/vta/direct.py) keeps the data tensor channel-blocked in DRAM: LOAD's
zero padding supplies the borders and the GEMM micro-ops walk the filter taps,
so nothing is duplicated on the host. A grouped conv's group is a loop over
groups, each with its channels padded to the lanes.
"""

from __future__ import annotations

from embedcsp.csp import ROLES
from embedcsp.operator import Operator
from embedcsp.targets.vta.direct import conv_shape, direct_unsupported, host_padding


class DirectLayout:
    """The direct conv form as CSP constraints and a bytes cost."""

    name = "direct"

    def unsupported(self, op: Operator) -> str | None:
        """Why the form cannot hold `op`, or None."""
        return direct_unsupported(op)

    def constrain(self, model, on) -> None:
        """Channels alone on BLOCK_IN, output channels alone on BLOCK_OUT, nothing but the
        batch on BATCH and a group as a loop: one inp element is one pixel's channel block, and
        the filter window is address arithmetic."""
        m = model.m
        m.add(model.bind[model.first]["data"] == 1).only_enforce_if(on)
        # g_*: a block-diagonal placement; q_*: a banded one, whose c and k (extent 1) are loops.
        banded = conv_shape(model.op).band is not None
        alone = {"q_in": "red", "q_out": "col"} if banded else {"c": "red", "k": "col", "g_in": "red", "g_out": "col"}
        for d in sorted(model.batched):  # a group is G convs in a row, each over its own slice
            m.add(model.loop[d] == 1).only_enforce_if(on)
        for d in model.op.dims:
            for r in ROLES:
                if alone.get(d.name) == r:
                    m.add(model.role_lane(d.name, r) == 1).only_enforce_if(on)
                elif not (r == "row" and d.name == "n"):
                    m.add(model.role_lane(d.name, r) == 0).only_enforce_if(on)

    def first_operand_bytes(self, model, on, inp_bytes) -> None:
        """The channel-blocked data tensor's bytes, with or without the batch on BATCH."""
        n_row = model.role_lane("n", "row")
        model.m.add(inp_bytes == self._bytes(model, True)).only_enforce_if([on, n_row])
        model.m.add(inp_bytes == self._bytes(model, False)).only_enforce_if([on, n_row.Not()])

    @staticmethod
    def _bytes(model, n_on_lanes: bool) -> int:
        cfg, shape = model.acc.config, conv_shape(model.op)
        rows = -(-shape.N // cfg.batch) * cfg.batch if n_on_lanes else shape.N * cfg.batch
        hp, wp = host_padding(shape)
        blocked = -(-shape.C // cfg.block_in) * cfg.block_in  # each group's channels padded on their own
        return shape.G * rows * blocked * (shape.H + 2 * hp) * (shape.W + 2 * wp)


DIRECT = DirectLayout()
