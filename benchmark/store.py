"""The results database: one SQLite file, its schema and its queries, nothing else.

Two tables (schema version 1, kept in ``PRAGMA user_version``):

``runs``
    one row per attempt, successful or not: the run key (``ckpt_sha256, task, preset, subset, seed``; subset 0
    is the full split), every field of :class:`RunInfo` (``packages`` as JSON), ``status`` ('ok' | 'failed') and
    the ``error`` line of a failure. Rows are never deleted: this is the history.
``results``
    one row per (ckpt_sha256, task, preset, subset, seed, metric) — UNIQUE on those — with ``value``,
    ``direction`` ('up' | 'down') and the ``run_id`` of the attempt that produced it. A successful re-run
    (``--force``) replaces the key's rows, so this table always holds the latest successful run of each key.

Concurrency: the file is in WAL mode, every operation opens its own connection with a long busy timeout, and a
success (its run row plus all of its metric rows) is written in one ``BEGIN IMMEDIATE`` transaction, so several
``benchmark run`` processes can write to one file at once without losing a row. Non-finite metric values are
refused, never stored.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import BenchmarkError, TaskFailed

SCHEMA_VERSION = 2  # 2: runs.extra (the adapter's facts about the run, JSON)
BUSY_TIMEOUT_S = 60.0

_KEY_COLS = ("ckpt_sha256", "task", "preset", "subset", "seed")
_INFO_COLS = ("ckpt_path", "ckpt_label", "arch", "method", "suite", "task_version", "config_hash", "data_root",
              "data_fingerprint", "packages", "git_sha", "device", "started_at", "finished_at", "wall_s", "extra")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    ckpt_sha256      TEXT    NOT NULL,
    task             TEXT    NOT NULL,
    preset           TEXT    NOT NULL,
    subset           INTEGER NOT NULL,
    seed             INTEGER NOT NULL,
    ckpt_path        TEXT    NOT NULL DEFAULT '',
    ckpt_label       TEXT    NOT NULL DEFAULT '',
    arch             TEXT    NOT NULL DEFAULT '',
    method           TEXT    NOT NULL DEFAULT '',
    suite            TEXT    NOT NULL DEFAULT '',
    task_version     TEXT    NOT NULL DEFAULT '',
    config_hash      TEXT    NOT NULL DEFAULT '',
    data_root        TEXT    NOT NULL DEFAULT '',
    data_fingerprint TEXT    NOT NULL DEFAULT '',
    packages         TEXT    NOT NULL DEFAULT '{}',
    git_sha          TEXT    NOT NULL DEFAULT '',
    device           TEXT    NOT NULL DEFAULT '',
    started_at       REAL,
    finished_at      REAL,
    wall_s           REAL,
    status           TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    error            TEXT    NOT NULL DEFAULT '',
    extra            TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_by_key ON runs (ckpt_sha256, task, preset, subset, seed, status);
CREATE TABLE IF NOT EXISTS results (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    ckpt_sha256 TEXT    NOT NULL,
    task        TEXT    NOT NULL,
    preset      TEXT    NOT NULL,
    subset      INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    metric      TEXT    NOT NULL,
    value       REAL    NOT NULL,
    direction   TEXT    NOT NULL CHECK (direction IN ('up', 'down')),
    UNIQUE (ckpt_sha256, task, preset, subset, seed, metric)
);
CREATE INDEX IF NOT EXISTS results_by_run ON results (run_id);
"""

RESULT_COLUMNS = ["ckpt_sha256", "ckpt_label", "ckpt_path", "arch", "method", "suite", "task", "task_version",
                  "config_hash", "preset", "subset", "seed", "metric", "value", "direction", "started_at",
                  "finished_at", "wall_s", "device", "git_sha", "run_id"]
RUN_COLUMNS = ["run_id", *_KEY_COLS, *_INFO_COLS, "status", "error"]


@dataclass(frozen=True)
class RunKey:
    """Identity of one result; ``subset`` 0 means the full split."""

    ckpt_sha256: str
    task: str
    preset: str
    subset: int
    seed: int

    def values(self) -> tuple:
        return (self.ckpt_sha256, self.task, self.preset, int(self.subset), int(self.seed))


@dataclass
class RunInfo:
    """Metadata of one attempt."""

    key: RunKey
    ckpt_path: str = ""
    ckpt_label: str = ""
    arch: str = ""
    method: str = ""
    suite: str = ""
    task_version: str = ""
    config_hash: str = ""
    data_root: str = ""
    data_fingerprint: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    git_sha: str = ""
    device: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    wall_s: float = 0.0
    extra: dict = field(default_factory=dict)  # e.g. unreadable images skipped, iterations, prediction files

    def row(self) -> tuple:
        vals = []
        for col in _INFO_COLS:
            v = getattr(self, col)
            if col in ("packages", "extra"):
                v = json.dumps(dict(v or {}), sort_keys=True, default=str)
            elif col in ("started_at", "finished_at", "wall_s"):
                v = None if v is None else float(v)
            else:
                v = "" if v is None else str(v)
            vals.append(v)
        return (*self.key.values(), *vals)


class ResultStore:
    """The SQLite results database at ``path`` (created with its parent folders when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise BenchmarkError(f"results DB {self.path} is a directory", "pass the path of a .db file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchmarkError(f"cannot create the folder of results DB {self.path} ({exc})",
                                 "choose a writable --db path") from exc
        self._init_schema()

    # -- connections -------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise BenchmarkError(f"cannot open results DB {self.path} ({exc})", "choose a writable --db path") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._db_error(exc) from exc
        return conn

    def _db_error(self, exc: sqlite3.Error) -> BenchmarkError:
        msg = str(exc)
        if "not a database" in msg or "malformed" in msg or "file is encrypted" in msg:
            return BenchmarkError(f"{self.path} is not a SQLite results DB ({msg})",
                                  "point --db to another file, or move this one away")
        if "locked" in msg or "busy" in msg:
            return BenchmarkError(f"results DB {self.path} stayed locked for {BUSY_TIMEOUT_S:.0f} s ({msg})",
                                  "another process holds it; retry when it is done")
        return BenchmarkError(f"results DB {self.path}: {msg}", "check the file and its folder are writable")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as conn:
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._db_error(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, rolled back on any error."""
        with closing(self._connect()) as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._db_error(exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._db_error(exc) from exc
                raise

    def _init_schema(self) -> None:
        with closing(self._connect()) as conn:
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                self._check_version(version)
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                if version == SCHEMA_VERSION:
                    return
                conn.execute("BEGIN IMMEDIATE")
                try:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
                    self._check_version(version)
                    if version == 1:  # v1 -> v2: the extra column
                        conn.execute("ALTER TABLE runs ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    elif version == 0:
                        foreign = [r[0] for r in conn.execute(
                            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
                        if foreign:
                            raise BenchmarkError(
                                f"{self.path} is a SQLite DB but not a results DB (tables: {', '.join(foreign)})",
                                "point --db to another file")
                        for stmt in filter(str.strip, _SCHEMA.split(";")):
                            conn.execute(stmt)
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._db_error(exc) from exc

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise BenchmarkError(
                f"results DB {self.path} has schema version {version}, newer than this benchmark's "
                f"({SCHEMA_VERSION})", "upgrade the benchmark (git pull && make setup) or use another --db")

    # -- writes -----------------------------------------------------------------------------------------------
    def record_success(self, info: RunInfo, metrics: dict[str, float], directions: dict[str, str]) -> int:
        """Store a successful attempt and its metrics atomically; replaces earlier results of the same key.

        Returns the new run id. Raises TaskFailed (a BenchmarkError) for a NaN / inf value and BenchmarkError for
        an empty ``metrics`` or a metric without a valid direction; nothing is written then.
        """
        key = info.key
        if not metrics:
            raise TaskFailed(f"task {key.task}: the run returned no metric", "check the adapter's run() result")
        rows = []
        for name, value in metrics.items():
            try:
                v = float(value)
            except (TypeError, ValueError) as exc:
                raise TaskFailed(f"task {key.task}: metric {name} = {value!r} is not a number",
                                 "check the adapter's run() result") from exc
            if not math.isfinite(v):
                raise TaskFailed(f"task {key.task}: metric {name} is {v} (not finite), not stored",
                                 "the run produced no valid score; see its log and re-run")
            d = directions.get(name)
            if d not in ("up", "down"):
                raise BenchmarkError(f"task {key.task}: metric {name} has direction {d!r}",
                                     "give every metric the direction 'up' or 'down' (see its task spec)")
            rows.append((str(name), v, d))
        with self._write() as conn:
            run_id = self._insert_run(conn, info, "ok", "")
            conn.execute("DELETE FROM results WHERE ckpt_sha256 = ? AND task = ? AND preset = ? AND subset = ? "
                         "AND seed = ?", key.values())
            conn.executemany(
                "INSERT INTO results (run_id, ckpt_sha256, task, preset, subset, seed, metric, value, direction) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [(run_id, *key.values(), *r) for r in rows])
        return run_id

    def record_failure(self, info: RunInfo, error: str) -> int:
        """Store a failed attempt (its results, if any earlier run succeeded, stay); returns the run id."""
        with self._write() as conn:
            return self._insert_run(conn, info, "failed", str(error).strip())

    @staticmethod
    def _insert_run(conn: sqlite3.Connection, info: RunInfo, status: str, error: str) -> int:
        cols = (*_KEY_COLS, *_INFO_COLS, "status", "error")
        cur = conn.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                           (*info.row(), status, error))
        return int(cur.lastrowid)

    # -- reads ------------------------------------------------------------------------------------------------
    def is_done(self, key: RunKey) -> bool:
        """True when an 'ok' result exists for the key."""
        with self._read() as conn:
            row = conn.execute("SELECT 1 FROM results WHERE ckpt_sha256 = ? AND task = ? AND preset = ? "
                               "AND subset = ? AND seed = ? LIMIT 1", key.values()).fetchone()
        return row is not None

    def stored_run(self, key: RunKey) -> dict | None:
        """The run that produced the key's stored results (task_version, data_fingerprint, data_root, git_sha,
        finished_at), or None when the key has no result."""
        cols = ("task_version", "data_fingerprint", "data_root", "git_sha", "finished_at")
        with self._read() as conn:
            row = conn.execute(f"SELECT {', '.join('u.' + c for c in cols)} FROM results r JOIN runs u "
                               "ON u.id = r.run_id WHERE r.ckpt_sha256 = ? AND r.task = ? AND r.preset = ? "
                               "AND r.subset = ? AND r.seed = ? LIMIT 1", key.values()).fetchone()
        return dict(zip(cols, row)) if row else None

    def results(self) -> pd.DataFrame:
        """Long format: one row per metric of the latest successful run of each key (columns RESULT_COLUMNS)."""
        cols = ", ".join(f"r.{c}" if c in (*_KEY_COLS, "metric", "value", "direction", "run_id") else f"u.{c}"
                         for c in RESULT_COLUMNS)
        with self._read() as conn:
            rows = conn.execute(f"SELECT {cols} FROM results r JOIN runs u ON u.id = r.run_id "
                                "ORDER BY r.run_id, r.id").fetchall()
        df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        return df.astype({"subset": "int64", "seed": "int64", "value": "float64", "run_id": "int64",
                          "started_at": "float64", "finished_at": "float64", "wall_s": "float64"})

    def runs(self) -> pd.DataFrame:
        """Every attempt, failures included, oldest first (``packages`` decoded to a dict)."""
        cols = ["id", *RUN_COLUMNS[1:]]
        with self._read() as conn:
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM runs ORDER BY id").fetchall()
        df = pd.DataFrame(rows, columns=RUN_COLUMNS)
        df["packages"] = [json.loads(p) for p in df["packages"]]
        df["extra"] = [json.loads(e) for e in df["extra"]]
        return df.astype({"run_id": "int64", "subset": "int64", "seed": "int64", "started_at": "float64",
                          "finished_at": "float64", "wall_s": "float64"})
