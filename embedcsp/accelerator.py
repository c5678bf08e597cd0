"""Accelerator descriptions, whatever their family (docs/isa-files.md).

An ISA file names its family in `[accelerator] family`; the registry
(embedcsp.targets.registry) finds that family, which reads its own tables
into an `Accelerator`: a name, the instruction's pattern, and the family's
config. The core reads only the pattern and the description.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

from embedcsp.errors import IsaError
from embedcsp.pattern import Pattern


@dataclass(frozen=True)
class Accelerator:
    """A loaded accelerator description."""

    name: str
    family: str
    pattern: Pattern
    # The family's own description: a frozen dataclass with tables() (the ISA file's tables it
    # came from, as plain data; docs/isa-files.md) and tag() (a short name for reports).
    config: Any
    source: str

    @property
    def role_of(self) -> dict[str, str]:
        """Pattern dim -> its lane class: 'row' (output and first input), 'col' (output and
        second input), 'red' (both inputs) or 'bat' (all three); VTA: b row, o col, i red."""
        out = set(self.pattern.output.dims)
        a, b = (set(o.dims) for o in self.pattern.inputs)
        roles = {}
        for d in self.pattern.dim_names:
            if d in out and d in a and d in b:
                roles[d] = "bat"
            elif d in out and d in a:
                roles[d] = "row"
            elif d in out and d in b:
                roles[d] = "col"
            else:
                roles[d] = "red"
        return roles

    def description(self) -> dict:
        """The whole description as an ISA file would state it (docs/isa-files.md), lanes as numbers."""
        tables = self.config.tables()
        # The family's own [intrinsic] table, where it has one, says more than the pattern
        # (the tile family's initiation interval), and its digest must see that.
        intrinsic = {"statement": self.pattern.statement(), "lanes": dict(self.pattern.lanes),
                     **tables.pop("intrinsic", {})}
        return {"accelerator": {"name": self.name, "family": self.family}, **tables, "intrinsic": intrinsic}

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of `description()`: two runs with equal digests ran on
        the same hardware description, whatever the files were called."""
        canonical = json.dumps(self.description(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def check_keys(table: Mapping, label: str, allowed: Sequence[str], required: Sequence[str],
               source: str) -> None:
    """IsaError unless `table` (an ISA file's `label`) has only `allowed` keys and every `required` one."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise IsaError(f"{source}: unknown {label} key(s) {', '.join(unknown)}; expected {', '.join(allowed)}")
    missing = sorted(set(required) - set(table), key=list(required).index)
    if missing:
        raise IsaError(f"{source}: {label} is missing {', '.join(missing)}")


def accelerator_from_dict(doc: Any, source: str) -> Accelerator:
    """An accelerator from a parsed ISA file: the family it names reads the rest."""
    from embedcsp.targets.registry import family

    if not isinstance(doc, dict) or not isinstance(doc.get("accelerator", {}), dict):
        raise IsaError(f"{source}: an ISA file needs an [accelerator] table with name and family")
    name = doc.get("accelerator", {}).get("family")
    if not isinstance(name, str):
        raise IsaError(f"{source}: [accelerator] family must name an accelerator family, got {name!r}")
    return family(name).load(doc, source)


def load_accelerator(path: str | Path | None = None) -> Accelerator:
    """Load an accelerator TOML file; None means the shipped default VTA."""
    if path is None:
        text = resources.files("embedcsp.isa").joinpath("vta.toml").read_text()
        source = "vta.toml"
    else:
        path = Path(path)
        if not path.is_file():
            raise IsaError(f"ISA file {str(path)!r} does not exist")
        text = path.read_text()
        source = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise IsaError(f"{source}: not valid TOML ({exc})") from None
    return accelerator_from_dict(doc, source)


