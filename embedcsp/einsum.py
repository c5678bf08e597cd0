"""Any affine operator from one statement: the general constructor (docs/operators.md).

    out[n,k,p,q] += data[n,c,2*p+r-1,2*q+s-1] * weight[k,c,r,s]

with the extent of every dim and the shape of every tensor whose shape the dims do not
give. Index expressions are affine in the dims with integer coefficients; an index
outside a tensor's shape reads zero (that is what padding means). Each output index is
one dim, so every point of the domain adds to one output element.
"""

from __future__ import annotations

import re

import sympy

from embedcsp.errors import BadInput
from embedcsp.operator import MAX_EXTENT, AffineIndex, Dim, Operator, Tensor

_TERM = r"([A-Za-z_]\w*)\s*\[([^\]]*)\]"
_STATEMENT = re.compile(rf"^\s*{_TERM}\s*\+=\s*{_TERM}\s*\*\s*{_TERM}\s*$")


def einsum(statement: str, dims: dict[str, int], shapes: dict[str, tuple[int, ...]] | None = None) -> Operator:
    """The operator `statement` states over `dims` (name -> extent).

    `shapes` gives tensor shapes by name; an axis indexed by a plain dim defaults to that
    dim's extent, any other axis must be given. BadInput names what is wrong.
    """
    match = _STATEMENT.match(statement)
    if not match:
        raise BadInput(f"statement {statement!r} is not of the form 'out[...] += a[...] * b[...]'")
    terms = [(match.group(i), match.group(i + 1)) for i in (1, 3, 5)]
    names = [t for t, _ in terms]
    if len(set(names)) != 3:
        raise BadInput(f"statement {statement!r} names a tensor twice")
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise BadInput(f"--shape names {', '.join(unknown)}, which the statement does not use "
                       f"(its tensors: {', '.join(names)})")
    for d, e in dims.items():
        if not re.fullmatch(r"[A-Za-z_]\w*", d):
            raise BadInput(f"dim name {d!r} is not an identifier")
        if not isinstance(e, int) or isinstance(e, bool) or not 1 <= e <= MAX_EXTENT:
            raise BadInput(f"dim {d} must have a whole extent within 1..{MAX_EXTENT}, got {e!r}")
    symbols = {d: sympy.Symbol(d, integer=True) for d in dims}
    accesses = [tuple(_index(text, symbols, statement) for text in _split(body, statement))
                for _, body in terms]
    used = set().union(*(ix.dims for access in accesses for ix in access))
    unused = [d for d in dims if d not in used]
    if unused:
        raise BadInput(f"--dims gives {', '.join(unused)}, which no index of the statement uses")
    for ix in accesses[0]:
        if len(ix.terms) != 1 or ix.terms[0][1] != 1 or ix.const != 0:
            raise BadInput(f"output index {ix} of {statement!r} must be one dim: each point of the "
                           "domain adds to one output element")
    tensors = []
    for (name, _), access, role in zip(terms, accesses, ("output", "input", "input")):
        shape = _shape(name, access, dims, shapes.get(name))
        tensors.append(Tensor(name, role, shape, access))
    order = [d for access in accesses for ix in access for d, _ in ix.terms]
    dim_order = list(dict.fromkeys(order))
    return Operator("einsum", tuple((d, dims[d]) for d in dim_order),
                    tuple(Dim(d, dims[d]) for d in dim_order), (*tensors[1:], tensors[0]))


def _split(body: str, statement: str) -> list[str]:
    parts = [p.strip() for p in body.split(",")] if body.strip() else []
    if any(not p for p in parts):
        raise BadInput(f"statement {statement!r} has an empty index")
    return parts


def _index(text: str, symbols: dict[str, sympy.Symbol], statement: str) -> AffineIndex:
    """One index expression as an AffineIndex: sympy parses, we check it is affine and integral."""
    try:
        expr = sympy.sympify(text, locals=dict(symbols), rational=True)
    except (sympy.SympifyError, SyntaxError, TypeError) as exc:
        raise BadInput(f"index {text!r} of {statement!r} is not an expression ({type(exc).__name__})") from None
    if not isinstance(expr, sympy.Expr):
        raise BadInput(f"index {text!r} of {statement!r} is not an arithmetic expression")
    strangers = sorted(str(s) for s in expr.free_symbols if str(s) not in symbols)
    if strangers:
        raise BadInput(f"index {text!r} of {statement!r} uses {', '.join(strangers)}, which --dims does not give")
    dims = [s for s in symbols.values() if s in expr.free_symbols]
    poly = sympy.Poly(expr, *dims) if dims else None
    if poly is not None and (poly.total_degree() > 1 or not expr.is_polynomial(*dims)):
        raise BadInput(f"index {text!r} of {statement!r} is not affine in the dims")
    coeffs = {str(d): expr.coeff(d) for d in dims}
    const = expr.subs({d: 0 for d in dims})
    for value in (*coeffs.values(), const):
        if not (value.is_number and value.is_integer):
            raise BadInput(f"index {text!r} of {statement!r} needs integer coefficients, got {value}")
    terms = tuple((d, int(c)) for d, c in coeffs.items() if int(c) != 0)
    return AffineIndex(terms, int(const))


def _shape(name: str, access: tuple[AffineIndex, ...], dims: dict[str, int],
           given: tuple[int, ...] | None) -> tuple[int, ...]:
    if given is not None:
        given = tuple(given)
        if len(given) != len(access):
            raise BadInput(f"--shape {name} has {len(given)} axes, the statement indexes {len(access)}")
        if any(not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_EXTENT for n in given):
            raise BadInput(f"--shape {name} must be whole sizes within 1..{MAX_EXTENT}, got {list(given)}")
        return given
    shape = []
    for ix in access:
        if len(ix.terms) == 1 and ix.terms[0][1] == 1 and ix.const == 0:
            shape.append(dims[ix.terms[0][0]])
        else:
            raise BadInput(f"tensor {name} is indexed by {ix}; give its shape with --shape {name}=...")
    return tuple(shape)


def parse_extents(text: str, flag: str) -> dict[str, int]:
    """'n=1,k=64' -> {'n': 1, 'k': 64}, for --dims."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq or not value.strip().lstrip("-").isdigit():
            raise BadInput(f"{flag} wants name=extent pairs separated by commas, got {part!r}")
        out[name.strip()] = int(value)
    return out


def parse_shapes(text: str | None) -> dict[str, tuple[int, ...]]:
    """'data=1x64x56x56,weight=64x64x3x3' -> {'data': (1, 64, 56, 56), ...}, for --shape."""
    out: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, eq, value = part.partition("=")
        sizes = value.split("x")
        if not eq or not all(s.strip().isdigit() for s in sizes):
            raise BadInput(f"--shape wants tensor=AxBxC pairs separated by commas, got {part!r}")
        out[name.strip()] = tuple(int(s) for s in sizes)
    return out
