"""Results store: one SQLite file (WAL mode) per results folder.

``runs`` holds one record per run (full config, status, final metrics per selection rule, cost,
provenance, the code fingerprint it was trained with, and ``meta``: the dataset's split roles, what
each selection rule read, the supervision budget); ``epochs`` one row per (run, epoch), keyed so that a
resumed run replaces rather than duplicates. Several processes may write at once (WAL + busy timeout).
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
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


class Store:
    """Thin typed wrapper over the SQLite results store."""

    def __init__(self, folder: Path | str, create: bool = True) -> None:
        self.folder = Path(folder)
        self.path = self.folder / STORE_FILENAME
        if not self.path.exists() and not create:
            raise UserError(f"no results store at {self.path}; run `python run_bench.py` or pass --out "
                            "to a results folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
            self._add_missing_columns()
            self._conn.execute("SELECT count(*) FROM runs").fetchone()
        except sqlite3.DatabaseError as err:
            raise UserError(
                f"results store {self.path} is corrupt ({err}); move it away or pass --out to a new folder"
            ) from None

    def _add_missing_columns(self) -> None:
        have = {row["name"] for row in self._conn.execute("PRAGMA table_info(runs)")}
        for column in ADDED_COLUMNS:
            if column not in have:
                self._conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")

    def close(self) -> None:
        self._conn.close()

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
        row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _decode(row)

    def runs(self, status: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM runs"
        args: tuple[str, ...] = ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        return [_decode(row) for row in self._conn.execute(query + " ORDER BY created_at, run_id", args)]

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT epoch, metrics FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))
        return [{"epoch": r["epoch"], **json.loads(r["metrics"])} for r in rows]


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    for column in JSON_COLUMNS:
        if record.get(column) is not None:
            record[column] = json.loads(record[column])
    return record
