"""Results store: one SQLite file (WAL mode) per results folder, plus optional shards.

``runs`` holds one record per run (full config, status, final metrics per selection rule, cost,
provenance, the code fingerprint it was trained with, and ``meta``: the dataset's split roles, what
each selection rule read, the supervision budget); ``epochs`` one row per (run, epoch), keyed so that a
resumed run replaces rather than duplicates. Several processes of one machine may write at once (WAL + busy
timeout).

Shards are for workers on other machines (Slurm jobs): SQLite's WAL mode needs shared memory, which a network
file system does not give, so a job never writes the folder's store. Each writes its own shard,
``shards/NAME.sqlite`` (rollback journal, one writer), seeded with the records it depends on (its teacher).
Readers (``Store(folder, create=False)``: reports, the leaderboard) see the union of the store and its
shards; ``merge_shards`` folds them into the store, idempotently, keeping each run's most settled record.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.config import canonical_json
from bench.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    protocol TEXT NOT NULL,
    seed INTEGER NOT NULL,
    model TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'finished', 'failed')),
    error TEXT,
    owner TEXT,
    final TEXT,
    cost TEXT,
    provenance TEXT,
    code TEXT,
    meta TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
"""
JSON_COLUMNS = ("config", "final", "cost", "provenance", "code", "meta")
ADDED_COLUMNS = ("code", "meta")  # columns newer than the first schema: added to older stores on open
STORE_FILENAME = "store.sqlite"
SHARDS_FOLDER = "shards"
# Which record of a run wins when a store and its shards disagree: the most settled status, then the newest.
STATUS_RANK = {"pending": 0, "running": 1, "failed": 2, "finished": 3}
# Marks a SQLite file as one of our stores (``PRAGMA application_id``, bytes 68-71 of the header). Stores made
# before the marker existed are recognised by their tables and get it the next time they are opened to write.
APPLICATION_ID = int.from_bytes(b"SCBn", "big")
SQLITE_MAGIC = b"SQLite format 3\x00"
FIRST_SCHEMA_COLUMNS = {  # the columns of ``runs`` in every version of the schema (ADDED_COLUMNS came later)
    "run_id", "method", "dataset", "protocol", "seed", "model", "config", "status", "error", "owner", "final", "cost",
    "provenance", "created_at", "updated_at",
}


class Store:
    """Thin typed wrapper over the SQLite results store."""

    def __init__(self, folder: Path | str, create: bool = True, shard: str | None = None) -> None:
        """Open the store of ``folder``; ``create``: create it (and the folder) when missing, and require that
        both are writable; without it the store is read as the union with its shards. ``shard``: open (and
        create) that shard of the folder instead, read and written alone. Every refusal is a ``UserError``
        raised before anything is created or changed."""
        self.folder = Path(folder)
        self.shard = shard
        self.path = self.folder / STORE_FILENAME if shard is None else shard_path(self.folder, shard)
        self._union = shard is None and not create
        self._shards: dict[Path, sqlite3.Connection] = {}
        create = create or shard is not None
        check_out_folder(self.folder, writable=create)
        if not os.path.exists(self.path):
            if not create and shard_paths(self.folder):
                raise UserError(f"no results store at {self.path}, only shards of cluster jobs; run `python "
                                f"run_bench.py merge --out {self.folder}` first")
            if not create:
                raise UserError(f"no results store at {self.path}; run `python run_bench.py` or pass --out "
                                "to a results folder")
            _create_store(self.path)
        elif create and _read_only(self.path):
            raise UserError(f"results store {self.path} is read-only; make it writable or pass --out to another "
                            "folder")
        legacy = _identify(self.path)
        self._open(mark=legacy and create)
        if legacy and create:
            _IDENTIFIED[_file_key(self.path)] = False  # type: ignore[index]  # marked now

    def _open(self, mark: bool) -> None:
        """Connect (WAL mode, schema up to date); ``mark``: set the marker of a store made before it."""
        try:
            self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as err:
            raise UserError(_open_error(self.path, err)) from None
        try:
            self._conn.row_factory = sqlite3.Row
            # a shard may live on a network file system, where WAL (shared memory) does not work
            self._conn.execute(f"PRAGMA journal_mode={'DELETE' if self.shard else 'WAL'}")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
            self._add_missing_columns()
            if mark:
                self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._conn.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.Error as err:
            self._conn.close()
            raise UserError(_open_error(self.path, err)) from None

    def _add_missing_columns(self) -> None:
        have = {row["name"] for row in self._conn.execute("PRAGMA table_info(runs)")}
        for column in ADDED_COLUMNS:
            if column not in have:
                self._conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")

    def close(self) -> None:
        self._conn.close()
        for conn in self._shards.values():
            conn.close()
        self._shards.clear()

    def run_dir(self, run_id: str) -> Path:
        return self.folder / "runs" / run_id

    # --- writing ----------------------------------------------------------------------------
    def ensure_run(self, run_id: str, config: dict[str, Any]) -> dict[str, Any]:
        """Insert a pending record for ``run_id`` unless one exists; return the record."""
        now = time.time()
        self._conn.execute(
            "INSERT OR IGNORE INTO runs (run_id, method, dataset, protocol, seed, model, config, status,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (run_id, config["method"], config["dataset"], config["protocol"], config["seed"], config["model"],
             canonical_json(config), now, now),
        )
        record = self.get(run_id)
        assert record is not None
        return record

    def mark_running(self, run_id: str, code: dict[str, Any]) -> None:
        """The run starts (or resumes) with ``code`` (its fingerprint: checkpoints of other code are not resumed)."""
        self._set(run_id, status="running", error=None, owner=f"{os.uname().nodename}:{os.getpid()}",
                  code=canonical_json(code))

    def add_epoch(self, run_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO epochs (run_id, epoch, metrics) VALUES (?, ?, ?)",
                (run_id, epoch, canonical_json(metrics)),
            )
            self._conn.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (time.time(), run_id))

    def drop_epochs_after(self, run_id: str, epoch: int) -> None:
        self._conn.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?", (run_id, epoch))

    def finish(self, run_id: str, final: dict[str, Any], cost: dict[str, Any], provenance: dict[str, Any],
               meta: dict[str, Any] | None = None) -> None:
        self._set(run_id, status="finished", error=None, final=canonical_json(final), cost=canonical_json(cost),
                  provenance=canonical_json(provenance), meta=canonical_json(meta or {}))

    def reset(self, run_id: str) -> None:
        """Forget a run's results (it will be trained again from scratch)."""
        with self._transaction():
            self._conn.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            self._conn.execute("UPDATE runs SET status = 'pending', error = NULL, final = NULL, cost = NULL,"
                               " provenance = NULL, code = NULL, meta = NULL, updated_at = ? WHERE run_id = ?",
                               (time.time(), run_id))

    def fail(self, run_id: str, reason: str) -> None:
        self._set(run_id, status="failed", error=reason)

    def _set(self, run_id: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in values)
        self._conn.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", (*values.values(), run_id))

    def _transaction(self) -> Any:
        conn = self._conn

        class _Tx:
            def __enter__(self) -> None:
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *_: Any) -> None:
                conn.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # --- reading ----------------------------------------------------------------------------
    def get(self, run_id: str) -> dict[str, Any] | None:
        found = self._best(run_id)
        return None if found is None else found[0]

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        chosen = sorted((record for record, _ in self._choose("SELECT * FROM runs", ()).values()),
                        key=lambda r: (r["created_at"], r["run_id"]))
        return [r for r in chosen if status is None or r["status"] == status]

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        found = self._best(run_id)
        conn = self._conn if found is None else found[1]
        rows = conn.execute("SELECT epoch, metrics FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))
        return [{"epoch": r["epoch"], **_load_json(r["metrics"], self.path, f"run {run_id} epoch {r['epoch']}")}
                for r in rows]

    def _best(self, run_id: str) -> tuple[dict[str, Any], sqlite3.Connection] | None:
        return self._choose("SELECT * FROM runs WHERE run_id = ?", (run_id,)).get(run_id)

    def _choose(self, query: str, args: tuple[str, ...]) -> dict[str, tuple[dict[str, Any], sqlite3.Connection]]:
        """run id → its most settled record over the sources (``query`` on each), with the connection holding it."""
        best: dict[str, tuple[dict[str, Any], sqlite3.Connection]] = {}
        for path, conn in self._sources():
            for row in conn.execute(query, args):
                record = _decode(row, path)
                if record["run_id"] not in best or _settles(record, best[record["run_id"]][0]):
                    best[record["run_id"]] = (record, conn)
        return best

    def _sources(self) -> list[tuple[Path, sqlite3.Connection]]:
        """The store, then (read as a union) each of its shards, those made since the last read included."""
        sources = [(self.path, self._conn)]
        if self._union:
            for path in shard_paths(self.folder):
                if path not in self._shards:
                    self._shards[path] = _open_shard_to_read(path)
                sources.append((path, self._shards[path]))
        return sources

    # --- shards -----------------------------------------------------------------------------
    def put_raw(self, run: dict[str, Any], epochs: list[dict[str, Any]]) -> None:
        """Write a run's record and epochs exactly as another store holds them (columns as stored)."""
        columns = ", ".join(run)
        with self._transaction():
            self._conn.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({', '.join('?' * len(run))})",
                               tuple(run.values()))
            self._conn.execute("DELETE FROM epochs WHERE run_id = ?", (run["run_id"],))
            self._conn.executemany("INSERT INTO epochs (run_id, epoch, metrics) VALUES (?, ?, ?)",
                                   [(e["run_id"], e["epoch"], e["metrics"]) for e in epochs])

    def raw(self, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """A run's record and epochs as this store's own file holds them (columns as stored), or None."""
        return _raw(self._conn, run_id)


def shard_path(folder: Path, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"invalid shard name {name!r}; use letters, digits, '-' and '_'")
    return folder / SHARDS_FOLDER / f"{name}.sqlite"


def shard_paths(folder: Path) -> list[Path]:
    return sorted((folder / SHARDS_FOLDER).glob("*.sqlite"))


def merge_shards(folder: Path | str, only: list[Path] | None = None) -> dict[str, int]:
    """Fold the shards of ``folder`` (or just ``only``) into its store: a run is copied when its shard's record
    is more settled than the store's (``STATUS_RANK``, then newer), with its epochs. Merging again changes
    nothing; shards are kept (a worker may still be writing one). Returns the counts."""
    store = Store(folder)
    counts = {"shards": 0, "copied": 0, "unchanged": 0}
    try:
        for path in only if only is not None else shard_paths(store.folder):
            if not path.exists():
                continue
            counts["shards"] += 1
            conn = _open_shard_to_read(path)
            try:
                with _read_snapshot(conn):
                    shard_runs = [dict(row) for row in conn.execute("SELECT * FROM runs")]
                    entries = {r["run_id"]: _raw(conn, r["run_id"]) for r in shard_runs}
            finally:
                conn.close()
            for run_id, entry in entries.items():
                assert entry is not None
                mine = store.raw(run_id)
                if mine is None or _settles(entry[0], mine[0]):
                    store.put_raw(*entry)
                    counts["copied"] += 1
                else:
                    counts["unchanged"] += 1
    finally:
        store.close()
    return counts


def _settles(record: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether ``record`` is a more settled version of the same run than ``other``."""
    return (STATUS_RANK[record["status"]], record["updated_at"]) > (STATUS_RANK[other["status"]], other["updated_at"])


def _raw(conn: sqlite3.Connection, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    epochs = conn.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))
    return dict(row), [dict(e) for e in epochs]


def _open_shard_to_read(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=60, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT count(*) FROM runs").fetchone()
    except sqlite3.Error as err:
        raise UserError(f"store shard {path} cannot be read ({err}); move it away or wait for its job to "
                        "finish") from None
    return conn


@contextlib.contextmanager
def _read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: every row read inside it comes from the same state of the file."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _decode(row: sqlite3.Row, path: Path) -> dict[str, Any]:
    record = dict(row)
    for column in JSON_COLUMNS:
        if record.get(column) is not None:
            record[column] = _load_json(record[column], path, f"run {record['run_id']} ({column})")
    return record


def _load_json(text: str, path: Path, where: str) -> dict[str, Any]:
    """A JSON object written by ``canonical_json``; anything else means the store was edited or damaged."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as err:
        value, reason = None, f"invalid JSON: {err}"
    else:
        reason = f"{text[:40]!r}, not a JSON object"
    if not isinstance(value, dict):
        raise UserError(f"results store {path} is damaged: {where} holds {reason}; restore the store from a "
                        "backup or pass --out to a new folder")
    return value


# --- opening: what is (and is not) a store ----------------------------------------------------------------
def check_out_folder(folder: Path, writable: bool) -> None:
    """Refuse ``folder`` as an output folder before anything is created: a path through a file, a name the
    system cannot hold, and (``writable``) a folder, or the nearest existing parent of a new one, that is
    read-only."""
    try:
        existing = _nearest_existing(folder)
    except (OSError, ValueError) as err:  # ValueError: an embedded NUL byte
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UserError(f"cannot use {str(folder)!r} as a folder ({reason}); pass --out to another folder") from None
    if not existing.is_dir():
        raise UserError(f"{existing} is a file, not a folder; pass --out to a folder")
    if writable and _read_only(existing):
        raise UserError(f"folder {existing} is read-only; make it writable or pass --out to another folder")


def _nearest_existing(folder: Path) -> Path:
    for candidate in (folder, *folder.parents):
        try:
            candidate.stat()
        except (FileNotFoundError, NotADirectoryError):  # not there, or under a file (found further up)
            continue
        return candidate
    return Path(".")


def _read_only(path: Path) -> bool:
    # root may write anywhere (os.access says yes), so a path whose mode grants nobody write access counts as
    # read-only too: someone marked it so on purpose
    return not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222


def _create_store(path: Path) -> None:
    """Create an empty store at ``path`` atomically: built beside it, then hard-linked into place, so that no
    process ever sees a half-made store. Hence the rule of ``_identify``: a 0-byte file is never one of ours."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(temporary)
        conn.executescript(f"PRAGMA application_id = {APPLICATION_ID};{SCHEMA}")
        conn.close()
        _link_new(temporary, path)
    except (OSError, sqlite3.Error) as err:
        raise UserError(f"cannot create results store {path} ({err}); check the folder or pass --out to another "
                        "folder") from None
    finally:
        temporary.unlink(missing_ok=True)


def _link_new(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` unless ``target`` exists (then another process created it first: keep it)."""
    try:
        os.link(source, target)
    except FileExistsError:
        return
    except OSError:  # no hard links on this filesystem: claim the name exclusively, then fill it (not atomic)
        try:
            with open(target, "xb") as file:
                file.write(source.read_bytes())
        except FileExistsError:
            return


# Files identified by this process: (resolved path, inode) → predates the marker. SQLite holds POSIX record
# locks, which the kernel drops for the whole process as soon as *any* descriptor of the file is closed, so
# the raw header read below must never happen while a connection of this process has the file open: each
# file is read once, before this process connects to it, and afterwards only looked up here.
_IDENTIFIED: dict[tuple[str, int], bool] = {}


def _identify(path: Path) -> bool:
    """Check that ``path`` is one of our stores without writing to it; returns whether it predates the marker.
    Refused: an empty file, a file that is not SQLite (corrupt), and another program's database."""
    key = _file_key(path)
    if key is not None and key in _IDENTIFIED:
        return _IDENTIFIED[key]
    legacy = _read_header(path)
    if key is not None:
        _IDENTIFIED[key] = legacy
    return legacy


def _file_key(path: Path) -> tuple[str, int] | None:
    try:
        return str(path.resolve()), path.stat().st_ino
    except OSError:
        return None


def _read_header(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            header = file.read(100)
    except OSError as err:  # a folder or an unreadable file named like the store
        raise UserError(f"cannot read results store {path} ({err.strerror}); move it away or pass --out to another "
                        "folder") from None
    if not header:
        raise UserError(f"results store {path} is an empty file, not a store; delete it or pass --out to another "
                        "folder")
    if not header.startswith(SQLITE_MAGIC):
        raise UserError(f"results store {path} is corrupt (not an SQLite database); move it away or pass --out to "
                        "a new folder")
    application_id = int.from_bytes(header[68:72], "big")
    if application_id == APPLICATION_ID:
        return False
    if application_id == 0 and _looks_like_first_schema(path):
        return True
    raise UserError(f"{path} is not a shortcut-bench store (another program's SQLite database); move it away or "
                    "pass --out to another folder")


def _looks_like_first_schema(path: Path) -> bool:
    """Whether the database at ``path`` has our tables and no others (a store made before the marker)."""
    # immutable: no -shm/-wal files created beside a database that may not be ours. A -wal file already there
    # holds part of the database, which only a normal connection reads (it only reads here).
    wal = path.with_name(path.name + "-wal").exists()
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + ("" if wal else "?immutable=1"), uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise UserError(_open_error(path, err)) from None
    tables = {name for name in tables if not name.startswith("sqlite_")}
    return tables in ({"runs"}, {"runs", "epochs"}) and FIRST_SCHEMA_COLUMNS <= columns


def _open_error(path: Path, err: sqlite3.Error) -> str:
    """One line for a store SQLite cannot open: a permission problem is not corruption."""
    if "readonly" in str(err) or "unable to open" in str(err):
        return f"results store {path} cannot be written ({err}); make {path.parent} writable or pass --out to " \
               "another folder"
    if isinstance(err, sqlite3.OperationalError):
        return f"results store {path} cannot be opened ({err}); retry, or pass --out to another folder"
    return f"results store {path} is corrupt ({err}); move it away or pass --out to a new folder"
