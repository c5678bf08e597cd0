"""The direct form of conv2d: the filter window walked by VTA itself, no im2col.

With input channels on the BLOCK_IN lanes, output channels on BLOCK_OUT and
(optionally) the batch on BATCH, the data tensor can stay in DRAM as it is,
only channel-blocked:
    inp  [images][CB][H][W]   elements of BATCH x BLOCK_IN (NCHW1n16c for VTA)
    wgt  [KB][CB][R][S]       elements of BLOCK_OUT x BLOCK_IN
    acc  [images][P][Q][KB]   elements of BATCH x BLOCK_OUT
A row tile is `rows` output rows by `width` output columns of one image; its
input window, (rows-1)*sh+R by (width-1)*sw+S, is loaded one channel block at
a time, and LOAD's zero padding (up to 15 per side) supplies the border, so
the host neither pads nor duplicates anything (except a border LOAD cannot
express: wider than 15, or as wide as the filter, see host_padding). The GEMM walks the taps:
    iter_out = output row p    (acc += width*cols,  inp += sh*Wt)
    iter_in  = output column q (acc += cols,        inp += sw)
    micro-ops = (cb, r, s, j)  (acc j, inp cb*Ht*Wt + r*Wt + s, wgt ((j*cbt + cb)*R + r)*S + s)
When few output blocks make that kernel write one ACC element within two
micro-ops (the GEMM pipeline hazard), columns are unrolled into the kernel, or
as a last resort each tap gets its own GEMM.
A grouped conv (embedcsp.ops.conv2d_general: data [N,G,C/G,H,W], weight
[G,K/G,C/G,R,S], out [N,G,K/G,P,Q]) is G such convs: the group is a batch loop
(Plan.n_bats) outermost of the tile loops, and each group's tensors are a slice
of their own in each region, its channels padded to the lanes on their own.
Padding may differ per side (ONNX's and Keras's `same`): LOAD pads each side
of a window by itself.
This is VTA's own conv2d strategy (one GEMM per filter tap over NCHW16c data;
its group_conv2d_packed per group) and the layout the reference strategy uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedcsp.embedding import Embedding
from embedcsp.errors import NoEmbedding
from embedcsp.operator import Operator
from embedcsp.targets.vta.config import (
    MEM_ACC,
    MEM_INP,
    MEM_OUT,
    MEM_WGT,
    MEMOP_PAD_BITS,
)
from embedcsp.targets.vta.encoding import OP_LOAD, OP_STORE, GemmInsn, MemInsn
from embedcsp.targets.vta.hazard import gemm_hazard
from embedcsp.targets.vta.plan import (
    BUS_BYTES,
    INSN_OVERHEAD,
    MAX_LOOP,
    ROW_OVERHEAD,
    Plan,
    Tiling,
    candidate_extents,
    overlap_cycles,
)
from embedcsp.targets.vta.steps import Kernels, Step

PAD_LIMIT = (1 << MEMOP_PAD_BITS) - 1  # LOAD pads at most this many elements per side
MAX_UNROLL = 8  # output columns unrolled into one tap kernel, at most


@dataclass(frozen=True)
class Band:
    """The banded placement's column tiles (embedcsp/placements/banded.py), as the direct form
    sees them: each data element holds C (the ConvShape's) consecutive input columns of one row,
    from column stride*K*tile + offset, and each output element K consecutive output columns."""

    stride: int
    offset: int  # the column of lane 0 of tile 0 (minus the left padding)
    width: int  # the conv's own W, Q and S, which the ConvShape counts in tiles
    out_width: int
    taps: int


@dataclass(frozen=True)
class ConvShape:
    """A conv's geometry read from its access maps; C and K are per group (all of them when G = 1)."""

    N: int
    G: int
    C: int
    K: int
    H: int
    W: int
    R: int
    S: int
    P: int
    Q: int
    sh: int
    sw: int
    top: int
    left: int
    # Groups per block of a block-diagonal placement (embedcsp/placements/block_diagonal.py):
    # G counts blocks, C and K a block's channels, its filter zero off the diagonal.
    diag: int = 1
    # The banded placement of a depthwise conv: W, Q count column tiles, S = 1, C and K the lanes
    # of a tile (the filter, one channel's, is the band).
    band: Band | None = None

    @property
    def bottom(self) -> int:
        """Rows below the image that the last window reaches (the padding that matters)."""
        return max(0, (self.P - 1) * self.sh + self.R - self.H - self.top)

    @property
    def right(self) -> int:
        return max(0, (self.Q - 1) * self.sw + self.S - self.W - self.left)


def _plain(access, dims: tuple[str, ...]) -> bool:
    """Each index is exactly its dim."""
    return len(access) == len(dims) and all(
        tuple((d, c) for d, c in ix.terms if c) == ((dim, 1),) and ix.const == 0 for ix, dim in zip(access, dims))


def _window(ix, out: str, tap: str) -> tuple[int, int] | None:
    """(stride, padding before) of an index `stride*out + tap - pad`, else None (dilated, or other)."""
    terms = {d: c for d, c in ix.terms if c}
    if set(terms) != {out, tap} or terms[tap] != 1 or terms[out] < 1 or ix.const > 0:
        return None
    return terms[out], -ix.const


def conv_shape(op: Operator) -> ConvShape | str:
    """The geometry of a conv2d, grouped or not, with any padding per side; else why not.

    The direct form's address arithmetic is this geometry, so the access maps must be exactly
    conv2d's (operator.conv2d, or ops.conv2d_general without dilation): names included."""
    if op.kind not in ("conv2d", "einsum"):
        return f"{op.kind} has no filter window"
    ext = op.extents
    if "q_tile" in ext:
        return _banded_shape(op)
    grouped = "g" in ext
    diag = "g_out" in ext  # the block-diagonal statement of a grouped conv
    lead = ("n", "g") if grouped else ("n",)
    outer, inner = ((*lead, "g_out"), (*lead, "g_in")) if diag else (lead, lead)
    if set(ext) != {*outer, *inner, "k", "p", "q", "c", "r", "s"} or {t.name for t in op.tensors} != {"data", "weight", "out"}:
        return "it is not a conv2d statement over data, weight and out"
    data, weight, out = op.tensor("data"), op.tensor("weight"), op.output
    rows = _window(data.access[-2], "p", "r") if len(data.access) == len(inner) + 3 else None
    cols = _window(data.access[-1], "q", "s") if rows else None
    taps = weight.access
    if diag:  # the extent-1 axis that reads zero off the diagonal blocks
        off = {d: c for d, c in taps[-1].terms if c} if taps else {}
        if off != {"g_in": 1, "g_out": -1} or taps[-1].const or weight.shape[-1] != 1:
            return "its weight tensor is not a block-diagonal filter"
        taps = taps[:-1]
    if not (rows and cols and _plain(data.access[:-2], (*inner, "c"))
            and _plain(taps, (*outer[1:], "k", "c", "r", "s"))
            and _plain(out.access, (*outer, "k", "p", "q"))):
        return "its access maps are not those of a conv2d (a dilated or otherwise strided window)"
    if data.shape[:-2] != tuple(ext[d] for d in (*inner, "c")):
        return "its data tensor is not the conv's batch, groups and channels"
    (sh, top), (sw, left) = rows, cols
    f = ext["g_out"] if diag else 1
    return ConvShape(N=ext["n"], G=ext.get("g", 1), C=f * ext["c"], K=f * ext["k"], H=data.shape[-2],
                     W=data.shape[-1], R=ext["r"], S=ext["s"], P=ext["p"], Q=ext["q"],
                     sh=sh, sw=sw, top=top, left=left, diag=f)


def _banded_shape(op: Operator) -> ConvShape | str:
    """The banded statement of a depthwise conv, banded along its columns:
        out[n,g,k,p,B*q_tile+q_out] += data[n,g,c,sh*p+r-top,a*B*q_tile+q_in+offset] * weight[g,k,c,r,q_in-a*q_out]
    with k = c = 1: a conv over column tiles with a 1-wide filter and the band as its channels."""
    ext = op.extents
    lead = ("n", "g") if "g" in ext else ("n",)
    if set(ext) != {*lead, "k", "p", "q_tile", "q_out", "c", "r", "q_in"} or ext["c"] != 1 or ext["k"] != 1 \
            or {t.name for t in op.tensors} != {"data", "weight", "out"}:
        return "it is not the banded statement of a depthwise conv2d"
    data, weight, out = op.tensor("data"), op.tensor("weight"), op.output
    B, L = ext["q_out"], ext["q_in"]
    cols = {d: c for d, c in data.access[-1].terms if c}
    taps = {d: c for d, c in weight.access[-1].terms if c}
    ocols = {d: c for d, c in out.access[-1].terms if c}
    a = -taps.get("q_out", 0)
    rows = _window(data.access[-2], "p", "r") if len(data.access) == len(lead) + 3 else None
    if not (rows and a >= 1 and cols == {"q_tile": a * B, "q_in": 1} and taps == {"q_in": 1, "q_out": -a}
            and ocols == {"q_tile": B, "q_out": 1} and not weight.access[-1].const and not out.access[-1].const
            and _plain(data.access[:-2], (*lead, "c")) and _plain(weight.access[:-1], (*lead[1:], "k", "c", "r"))
            and _plain(out.access[:-1], (*lead, "k", "p"))):
        return "its access maps are not those of a banded depthwise conv2d"
    (sh, top), W = rows, data.shape[-1]
    S, Q = weight.shape[-1], out.shape[-1]
    band = Band(stride=a, offset=data.access[-1].const, width=W, out_width=Q, taps=S)
    tiles = ext["q_tile"]
    return ConvShape(N=ext["n"], G=ext.get("g", 1), C=L, K=B, H=data.shape[-2], W=tiles, R=ext["r"], S=1,
                     P=ext["p"], Q=tiles, sh=sh, sw=1, top=top, left=0, band=band)


def direct_unsupported(op: Operator) -> str | None:
    """Why the operator has no direct form, or None when it has one."""
    shape = conv_shape(op)
    return shape if isinstance(shape, str) else None


def host_padding(shape: ConvShape) -> tuple[int, int]:
    """Border the host writes into DRAM itself, on both sides of each axis: LOAD pads at most
    PAD_LIMIT per side, and a padding as wide as the filter leaves a window with no data, which
    LOAD cannot express. Where either side of an axis needs it, the host writes the wider one."""
    def border(before: int, after: int, f: int) -> int:
        return max(before, after) if max(before, after) > PAD_LIMIT or max(before, after) >= f else 0

    return border(shape.top, shape.bottom, shape.R), border(shape.left, shape.right, shape.S)


@dataclass(frozen=True)
class Window:
    """The direct form's geometry, in hardware elements (one group's, when grouped)."""

    images: int  # BATCH-lane chunks of n when n is on the lanes, else N
    n_lanes: bool
    P: int
    Q: int
    H: int
    W: int
    R: int
    S: int
    sh: int
    sw: int
    ph: int  # padding before the first row and column; the last window says the rest
    pw: int
    CB: int  # channel blocks (BLOCK_IN lanes) of one group
    KB: int  # output blocks (BLOCK_OUT lanes) of one group
    hp: int = 0  # border the host writes (host_padding); LOAD pads the rest
    wp: int = 0
    groups: int = 1  # the batch loop: each group's tensors are a slice of their own per region

    @property
    def stored(self) -> tuple[int, int]:
        """Rows and columns of one channel block of the image in DRAM."""
        return self.H + 2 * self.hp, self.W + 2 * self.wp

    @property
    def slices(self) -> tuple[int, int, int]:
        """Elements of one group's inp, wgt and out in their regions: group b's start b times further."""
        hs, ws = self.stored
        return (self.images * self.CB * hs * ws, self.KB * self.CB * self.R * self.S,
                self.images * self.P * self.Q * self.KB)

    @classmethod
    def of(cls, emb: Embedding) -> Window:
        shape = conv_shape(emb.operator)
        red, col, row = emb.group("red"), emb.group("col"), emb.group("row")
        assert emb.form == "direct" and red.dims in (("c",), ("g_in", "c"), ("q_in",))
        assert col.dims in (("k",), ("g_out", "k"), ("q_out",))
        assert row.dims in ((), ("n",))
        assert isinstance(shape, ConvShape) and (shape.G == 1 or emb.loops_of("bat")), "the group is a loop"
        n_lanes = row.dims == ("n",)
        hp, wp = host_padding(shape)
        return cls(images=row.chunks if n_lanes else shape.N, n_lanes=n_lanes,
                   P=shape.P, Q=shape.Q, H=shape.H, W=shape.W, R=shape.R, S=shape.S,
                   sh=shape.sh, sw=shape.sw, ph=shape.top, pw=shape.left,
                   CB=red.chunks, KB=col.chunks, hp=hp, wp=wp, groups=shape.G)

    def tiles(self, t: Tiling) -> tuple[int, int, int]:
        """Row tiles (images x output-row tiles x output-column tiles), output-block tiles, channel-block tiles."""
        return (self.images * -(-self.P // t.rows) * -(-self.Q // t.width),
                -(-self.KB // t.cols), -(-self.CB // t.reds))

    def window(self, rows: int, width: int) -> tuple[int, int]:
        """Input rows and columns an output tile of rows x width reads."""
        return (rows - 1) * self.sh + self.R, (width - 1) * self.sw + self.S


def direct_element_maps(emb: Embedding) -> dict[str, np.ndarray]:
    """Tensor flat index per lane, -1 for a zero lane, in DRAM order (see module doc).

    The tensors are data [N, G, C, H, W], weight [G, K, C, R, S] and out [N, G, K, P, Q] with C
    and K per group (G = 1: NCHW, KCRS, NKPQ); the group is the outermost axis of every region."""
    g = Window.of(emb)
    shape = conv_shape(emb.operator)
    assert isinstance(shape, ConvShape)
    cfg = emb.accelerator.config
    N, G, C, K = shape.N, shape.G, shape.C, shape.K
    B, BI, BO = cfg.batch, cfg.block_in, cfg.block_out

    def batch(img: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = img * B + b if g.n_lanes else img + 0 * b
        return n, (n < N) & (g.n_lanes | (b == 0))

    if shape.band is not None:
        return _banded_element_maps(g, shape, shape.band, B, BI, BO, batch)
    hs, ws = g.stored
    i = np.ogrid[:G, :g.images, :g.CB, :hs, :ws, :B, :BI]
    n, ok = batch(i[1], i[5])
    c = i[2] * BI + i[6]
    h, w = i[3] - g.hp, i[4] - g.wp
    inside = (h >= 0) & (h < g.H) & (w >= 0) & (w < g.W)
    inp = np.where(ok & (c < C) & inside, (((n * G + i[0]) * C + c) * g.H + h) * g.W + w, -1)
    o = np.ogrid[:G, :g.KB, :g.CB, :g.R, :g.S, :BO, :BI]
    k, c = o[1] * BO + o[5], o[2] * BI + o[6]
    # A block-diagonal filter holds group (block, b)'s own filter where k and c fall in block b.
    (bk, kg), (bc, cg) = np.divmod(k, K // shape.diag), np.divmod(c, C // shape.diag)
    flat = ((((o[0] * shape.diag + bk) * (K // shape.diag) + kg) * (C // shape.diag) + cg) * g.R + o[3]) * g.S + o[4]
    wgt = np.where((k < K) & (c < C) & (bk == bc), flat, -1)
    a = np.ogrid[:G, :g.images, :g.P, :g.Q, :g.KB, :B, :BO]
    n, ok = batch(a[1], a[5])
    k = a[4] * BO + a[6]
    acc = np.where(ok & (k < K), (((n * G + a[0]) * K + k) * g.P + a[2]) * g.Q + a[3], -1)
    return {name: np.ascontiguousarray(m, np.int32) for name, m in (("inp", inp), ("wgt", wgt), ("acc", acc))}


def _banded_element_maps(g: Window, shape: ConvShape, band: Band, B: int, BI: int, BO: int, batch
                         ) -> dict[str, np.ndarray]:
    """The direct form's maps for a banded depthwise conv: data [N, G, 1, H, W], weight
    [G, 1, 1, R, S], out [N, G, 1, P, Q] (the grouped views), in column tiles."""
    G, H, P, R = shape.G, shape.H, shape.P, shape.R
    W, Q, S = band.width, band.out_width, band.taps
    outputs, span = shape.K, shape.C  # a tile's output and input columns
    hs, ws = g.stored
    i = np.ogrid[:G, :g.images, :g.CB, :hs, :ws, :B, :BI]
    n, ok = batch(i[1], i[5])
    lane = i[2] * BI + i[6]
    h, col = i[3] - g.hp, band.stride * outputs * (i[4] - g.wp) + band.offset + lane
    inside = (lane < span) & (h >= 0) & (h < H) & (col >= 0) & (col < W)
    inp = np.where(ok & inside, ((n * G + i[0]) * H + h) * W + col, -1)
    o = np.ogrid[:G, :g.KB, :g.CB, :g.R, :1, :BO, :BI]
    q_out, q_in = o[1] * BO + o[5], o[2] * BI + o[6]
    tap = q_in - band.stride * q_out
    wgt = np.where((q_out < outputs) & (q_in < span) & (tap >= 0) & (tap < S),
                   (o[0] * R + o[3]) * S + tap, -1)
    a = np.ogrid[:G, :g.images, :g.P, :g.Q, :g.KB, :B, :BO]
    n, ok = batch(a[1], a[5])
    q_out = a[4] * BO + a[6]
    q = outputs * a[3] + q_out
    acc = np.where(ok & (q_out < outputs) & (q < Q), ((n * G + a[0]) * P + a[2]) * Q + q, -1)
    return {name: np.ascontiguousarray(m, np.int32) for name, m in (("inp", inp), ("wgt", wgt), ("acc", acc))}


def direct_plans(emb: Embedding, double_buffer: bool, bus_bytes: int = BUS_BYTES) -> list[Plan]:
    """Every tiling that fits the buffers, fastest first by the estimate."""
    g = Window.of(emb)
    cfg = emb.accelerator.config
    d_inp, d_wgt, d_acc = (cfg.depth(m) for m in (MEM_INP, MEM_WGT, MEM_ACC))
    taps = g.R * g.S
    n_rows, n_reds = g.images * g.P * g.Q, g.CB * taps
    scored = []
    for slots in ((2, 1) if double_buffer else (1,)):
        for cbt in candidate_extents(g.CB, d_wgt // (slots * taps)):
            for kbt in candidate_extents(g.KB, d_wgt // (slots * taps * cbt)):
                for pt in candidate_extents(g.P, d_acc // (slots * kbt)):
                    # pt*qt output pixels are the reset GEMM's and the ALU's row loop.
                    for qt in candidate_extents(g.Q, min(d_acc // (slots * kbt * pt), MAX_LOOP // pt)):
                        ht, wt = g.window(pt, qt)
                        if cbt * ht * wt > d_inp // slots:
                            continue
                        for outer in ("row", "col"):
                            t = Tiling(pt, kbt, cbt, outer, slots, slots, slots, width=qt)
                            cycles, load = _estimate(emb, g, t, bus_bytes)
                            scored.append(((cycles * g.groups, load * g.groups, -pt * qt * kbt * cbt,
                                            outer, slots), t))
    if not scored:
        raise NoEmbedding(
            f"no tiling of the direct form fits this VTA's buffers (INP {d_inp}, WGT {d_wgt}, "
            f"ACC {d_acc} elements): not even one output pixel of one channel block with its "
            f"{g.R}x{g.S} filter window")
    scored.sort(key=lambda item: item[0])
    return [Plan(emb, n_rows, g.KB, n_reds, t, cycles, load, g.tiles(t), g.groups)
            for (cycles, load, *_), t in scored]


def _estimate(emb: Embedding, g: Window, t: Tiling, bus_bytes: int) -> tuple[int, int]:
    """(cycles, DRAM bytes loaded), the same overlap model as the matrix form's estimate."""
    cfg = emb.accelerator.config
    nr, nc, nl = g.tiles(t)
    ht, wt = g.window(t.rows, t.width)
    taps = g.R * g.S
    inp_once = nr * g.CB * ht * wt * cfg.inp_elem_bytes  # halos included
    wgt_once = g.KB * g.CB * taps * cfg.wgt_elem_bytes
    inp_times = 1 if (nl == 1 and t.outer == "row") or (nr == 1 and nl == 1) else nc
    wgt_times = 1 if (nl == 1 and t.outer == "col") or (nc == 1 and nl == 1) else nr
    inp_rows = nr * g.CB * ht * inp_times
    wgt_rows = g.KB * nl * wgt_times
    steps = nr * nc * nl
    out_rows = g.images * g.P * g.Q
    compute = (out_rows * g.KB * g.CB * taps + nr * nc * (t.rows * t.width * t.cols + INSN_OVERHEAD)
               + steps * INSN_OVERHEAD)
    load = ((inp_once * inp_times + wgt_once * wgt_times) // bus_bytes
            + (inp_rows + wgt_rows) * ROW_OVERHEAD + (steps + nr * g.CB * nl) * INSN_OVERHEAD)
    stores = nr * nc * (1 if t.width == g.Q else t.rows)
    store = out_rows * g.KB * cfg.out_elem_bytes // bus_bytes + (out_rows + stores) * ROW_OVERHEAD
    return overlap_cycles(compute, load, store, t), inp_once * inp_times + wgt_once * wgt_times


@dataclass(frozen=True)
class _Tile:
    img: int
    p0: int
    rows: int
    q0: int
    width: int
    kb0: int
    cols: int
    cb0: int
    reds: int  # channel blocks
    ht: int
    wt: int


class DirectForm:
    """Loads, GEMMs and stores of one direct-form plan (the interface of codegen.MatrixForm)."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.g = g = Window.of(plan.embedding)
        t = plan.tiling
        ht, wt = g.window(t.rows, t.width)
        self.slot_elems = (t.reds * ht * wt, t.cols * t.reds * g.R * g.S, t.rows * t.width * t.cols)
        self.p_tiles, self.q_tiles = -(-g.P // t.rows), -(-g.Q // t.width)

    def _tile(self, st: Step) -> _Tile:
        g, t = self.g, self.plan.tiling
        img, rest = divmod(st.rt, self.p_tiles * self.q_tiles)
        pi, qi = divmod(rest, self.q_tiles)
        p0, q0, kb0, cb0 = pi * t.rows, qi * t.width, st.ct * t.cols, st.lt * t.reds
        rows, width = min(t.rows, g.P - p0), min(t.width, g.Q - q0)
        ht, wt = g.window(rows, width)
        return _Tile(img, p0, rows, q0, width, kb0, min(t.cols, g.KB - kb0), cb0,
                     min(t.reds, g.CB - cb0), ht, wt)

    def acc_shape(self, st: Step) -> tuple[int, int]:
        x = self._tile(st)
        return x.rows * x.width, x.cols

    def load_inp(self, st: Step, sram: int, dram: int) -> list[MemInsn]:
        g, x = self.g, self._tile(st)
        hs, ws = g.stored
        # Window origin in stored coordinates; it may lie in the border LOAD pads.
        h0, w0 = x.p0 * g.sh - g.ph + g.hp, x.q0 * g.sw - g.pw + g.wp
        y0, y1 = max(0, -h0), max(0, h0 + x.ht - hs)
        x0, x1 = max(0, -w0), max(0, w0 + x.wt - ws)
        assert x.ht > y0 + y1 and x.wt > x0 + x1, "a window without data (host_padding should cover it)"
        dram += st.bt * g.slices[0]
        return [MemInsn(OP_LOAD, MEM_INP, sram + c * x.ht * x.wt,
                        dram + ((x.img * g.CB + x.cb0 + c) * hs + h0 + y0) * ws + w0 + x0,
                        x.ht - y0 - y1, x.wt - x0 - x1, ws, y0, y1, x0, x1)
                for c in range(x.reds)]

    def load_wgt(self, st: Step, sram: int, dram: int) -> list[MemInsn]:
        g, x = self.g, self._tile(st)
        taps = g.R * g.S
        dram += st.bt * g.slices[1]
        return [MemInsn(OP_LOAD, MEM_WGT, sram, dram + (x.kb0 * g.CB + x.cb0) * taps,
                        x.cols, x.reds * taps, g.CB * taps)]

    def store(self, st: Step, sram: int, dram: int) -> list[MemInsn]:
        g, x = self.g, self._tile(st)
        dram += st.bt * g.slices[2]

        def row(p: int) -> int:  # DRAM element of output pixel (p, q0), block kb0
            return dram + ((x.img * g.P + p) * g.Q + x.q0) * g.KB + x.kb0

        if x.width == g.Q:  # whole output rows are contiguous in DRAM
            return [MemInsn(OP_STORE, MEM_OUT, sram, row(x.p0), x.rows * g.Q, x.cols, g.KB)]
        return [MemInsn(OP_STORE, MEM_OUT, sram + p * x.width * x.cols, row(x.p0 + p), x.width, x.cols, g.KB)
                for p in range(x.rows)]

    def gemm(self, st: Step, a0: int, i0: int, w0: int, kernels: Kernels) -> list[GemmInsn]:
        g, x = self.g, self._tile(st)
        taps = [(c, r, s) for c in range(x.reds) for r in range(g.R) for s in range(g.S)]
        unroll = _unroll(x, len(taps))
        if unroll is None:  # one GEMM per tap: every micro-op writes its own ACC element, so no hazard
            return [self._tap_gemm(x, (tap,), 1, a0, i0, w0, kernels) for tap in taps]
        return [self._tap_gemm(x, tuple(taps), unroll, a0, i0, w0, kernels)]

    def _tap_gemm(self, x: _Tile, taps: tuple[tuple[int, int, int], ...], unroll: int,
                  a0: int, i0: int, w0: int, kernels: Kernels) -> GemmInsn:
        """One GEMM over `taps` x `unroll` output columns x output blocks; the loops walk rows and columns."""
        g = self.g

        def kernel() -> list[tuple[int, int, int]]:
            return [(a0 + u * x.cols + j, i0 + self._src(x, tap) + u * g.sw, w0 + self._wgt(x, tap, j))
                    for tap in taps for u in range(unroll) for j in range(x.cols)]

        bgn, end = kernels.get(("direct", a0, i0, w0, x.ht, x.wt, x.cols, x.reds, unroll, taps), kernel)
        return GemmInsn(False, bgn, end, iter_out=x.rows, iter_in=x.width // unroll,
                        dst_factor_out=x.width * x.cols if x.rows > 1 else 0,
                        dst_factor_in=unroll * x.cols, src_factor_out=g.sh * x.wt if x.rows > 1 else 0,
                        src_factor_in=unroll * g.sw)

    def _src(self, x: _Tile, tap: tuple[int, int, int]) -> int:
        c, r, s = tap
        return c * x.ht * x.wt + r * x.wt + s

    def _wgt(self, x: _Tile, tap: tuple[int, int, int], j: int) -> int:
        c, r, s = tap
        return ((j * x.reds + c) * self.g.R + r) * self.g.S + s


def _unroll(x: _Tile, taps: int) -> int | None:
    """Output columns per kernel that keep the tap loop hazard-free, or None for one GEMM per tap."""
    for u in range(1, x.width + 1):
        if x.width % u:
            continue
        if u > MAX_UNROLL:
            break  # the kernel grows with u; beyond this, per-tap GEMMs cost less UOP space
        shown = min(taps, 3)  # the dst pattern repeats per tap; three taps show every step
        dst = np.tile((np.arange(u)[:, None] * x.cols + np.arange(x.cols)[None, :]).reshape(-1), shown)
        f_out = x.width * x.cols if x.rows > 1 else 0
        if not gemm_hazard(dst, x.rows, x.width // u, f_out, u * x.cols):
            return u
    return None
