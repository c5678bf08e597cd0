"""The bench's results store: one SQLite row per operator and run key, written as each finishes.

A row is keyed by the operator's name and a `RunKey`: the accelerator
description's sha256 (`Accelerator.digest`), the board, the seed, the solver's
time limit and the code version (`code_version`: the release and a digest of the
package's sources and tables, so a changed compiler never serves stale rows),
everything that can change a row. Jobs,
the engine and the output directory cannot, so they are not part of the key:
rows computed by a subset run, on Ray or with another `--out` serve every
later run that shares the store and the key.

Only the driver process writes (workers return rows to it), each row in its
own transaction, in WAL mode with a busy timeout, so several runs may share a
store: the worst they do is compute the same row twice and keep the last. A
file that is not a store this embedcsp can read (not SQLite, damaged, another
format) is `BadInput` naming the file, never a traceback.

Rows go in and come out as JSON, so a row read back is the row written
(str, int, float, bool and None survive the round trip unchanged).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from embedcsp.errors import BadInput

FORMAT = "embedcsp-bench-store/1"
BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another run's transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    operator TEXT NOT NULL,
    accelerator_sha256 TEXT NOT NULL,
    board TEXT NOT NULL,
    seed INTEGER NOT NULL,
    time_limit REAL NOT NULL,
    version TEXT NOT NULL,
    row TEXT NOT NULL,
    stored_at REAL NOT NULL,
    PRIMARY KEY (operator, accelerator_sha256, board, seed, time_limit, version)
);
"""


@cache
def code_version() -> str:
    """`<release>+<digest>`: the release number alone would let a row computed by an older
    compiler of the same release (a development tree, an edited install) answer for a newer
    one, so the key also hashes every source file and operator table of the package."""
    from embedcsp.__about__ import __version__

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    files = [*root.rglob("*.py")]
    from importlib.resources import files as resource_files

    tables = Path(str(resource_files("embedcsp.deepbench")))
    files += [*tables.rglob("*.csv")]
    for path in sorted(files):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class RunKey:
    """Everything but the operator's name that decides a row."""

    accelerator_sha256: str
    board: str
    seed: int
    time_limit: float
    version: str

    def params(self) -> tuple:
        return (self.accelerator_sha256, self.board, self.seed, float(self.time_limit), self.version)


class Store:
    """An open results store; use it as a context manager (`with open_store(path) as store:`)."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self._db = connection

    def __enter__(self) -> Store:  # noqa: PYI034 (a plain class, not subclassed)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def rows(self, key: RunKey, names: list[str] | tuple[str, ...]) -> dict[str, dict]:
        """The stored rows of `names` under `key`, by name; names without one are left out."""
        wanted = set(names)
        found: dict[str, dict] = {}
        with self._guard("read"):
            cursor = self._db.execute(
                "SELECT operator, row FROM rows WHERE accelerator_sha256 = ? AND board = ? AND seed = ? "
                "AND time_limit = ? AND version = ?", key.params())
            for name, text in cursor:
                if name in wanted:
                    found[name] = _decode(text, self.path, name)
        return found

    def put(self, key: RunKey, name: str, row: dict) -> None:
        """Store (or replace) one row, in its own transaction."""
        text = json.dumps(row, allow_nan=True)
        with self._guard("write"), self._db:  # the connection as context manager: commit or roll back
            self._db.execute("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (name, *key.params(), text, time.time()))

    def count(self) -> int:
        with self._guard("read"):
            return self._db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    def _guard(self, what: str):
        return _Guard(self.path, what)


class _Guard:
    """Turns sqlite3 errors into one-line BadInput naming the store."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if isinstance(exc, sqlite3.Error):
            raise BadInput(f"results store {self.path}: cannot {self.what} it ({exc}); "
                           "remove it or choose another --store") from None
        return False


def _decode(text: str, path: Path, name: str) -> dict:
    try:
        row = json.loads(text)
    except ValueError:
        row = None
    if not isinstance(row, dict):
        raise BadInput(f"results store {path}: the row of {name} is not a JSON object; "
                       "remove the store or choose another --store")
    return row


def open_store(path: Path | str) -> Store:
    """Open the store at `path`, creating it (and its directory) if missing; BadInput if the file
    is not a results store this embedcsp can read."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise BadInput(f"results store {path} is not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"results store {path}: cannot create its directory ({exc.strerror})") from None
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level="DEFERRED")
    except sqlite3.Error as exc:
        raise BadInput(f"results store {path}: cannot open it ({exc})") from None
    try:
        with _Guard(path, "read"):
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not {"meta", "rows"} <= tables:
                raise BadInput(f"results store {path} is an SQLite file but not a bench results store "
                               f"(tables: {', '.join(sorted(tables))}); remove it or choose another --store")
            db.execute("PRAGMA journal_mode = WAL").fetchone()
            db.execute("PRAGMA synchronous = NORMAL")  # WAL keeps the file whole on a crash
            if not tables:
                db.executescript(_SCHEMA)
            with db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            recorded = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0]
        if recorded != FORMAT:
            raise BadInput(f"results store {path} holds format {recorded!r}, this embedcsp reads {FORMAT!r}; "
                           "remove it or choose another --store")
    except BaseException:
        db.close()
        raise
    return Store(path, db)
