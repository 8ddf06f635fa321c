"""ResultStore: schema, round trips, skip logic, --force replacement, refusals, concurrent writers."""

from __future__ import annotations

import math
import multiprocessing as mp
import sqlite3

import pytest

from benchmark.errors import BenchmarkError
from benchmark.store import RESULT_COLUMNS, SCHEMA_VERSION, ResultStore, RunInfo, RunKey

SHA = "ab" * 32


def _info(task="coco_pose", seed=0, subset=0, preset="ci", sha=SHA, **kw) -> RunInfo:
    base = dict(ckpt_path="/ckpt/m.pth", ckpt_label="mim-b", arch="vit_base_patch16_224", method="simmim",
                suite="geometric", task_version="1", config_hash="c0ffee", data_root="/data",
                data_fingerprint="fp1", packages={"torch": "2.14.1", "mmpose": "1.3.2"}, git_sha="deadbeef",
                device="cpu", started_at=100.0, finished_at=160.5, wall_s=60.5)
    base.update(kw)
    return RunInfo(key=RunKey(sha, task, preset, subset, seed), **base)


def test_schema_created(tmp_path):
    path = tmp_path / "nested" / "dir" / "bench.db"
    ResultStore(path)
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "results"} <= tables
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        idx = conn.execute("SELECT sql FROM sqlite_master WHERE name LIKE 'sqlite_autoindex_results%'").fetchall()
        assert idx, "results must carry a UNIQUE constraint on the key + metric"
    ResultStore(path)  # reopening an existing DB is fine


def test_round_trip_metrics_and_metadata(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    info = _info()
    run_id = store.record_success(info, {"AP": 0.75, "AR": 0.8}, {"AP": "up", "AR": "up"})
    res = store.results()
    assert list(res.columns)[:len(RESULT_COLUMNS)] == RESULT_COLUMNS
    assert len(res) == 2 and set(res["metric"]) == {"AP", "AR"}
    row = res.set_index("metric").loc["AP"]
    assert row["value"] == 0.75 and row["direction"] == "up" and row["run_id"] == run_id
    assert (row["ckpt_sha256"], row["ckpt_label"], row["ckpt_path"], row["arch"], row["method"], row["suite"],
            row["task"], row["preset"], row["subset"], row["seed"], row["finished_at"]) == (
        SHA, "mim-b", "/ckpt/m.pth", "vit_base_patch16_224", "simmim", "geometric", "coco_pose", "ci", 0, 0, 160.5)
    runs = store.runs()
    assert len(runs) == 1
    r = runs.iloc[0]
    assert r["status"] == "ok" and r["error"] == ""
    assert r["packages"] == {"torch": "2.14.1", "mmpose": "1.3.2"}
    assert (r["data_root"], r["data_fingerprint"], r["git_sha"], r["device"], r["config_hash"], r["task_version"],
            r["wall_s"]) == ("/data", "fp1", "deadbeef", "cpu", "c0ffee", "1", 60.5)


def test_is_done_and_failures(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    key = _info().key
    assert not store.is_done(key)
    store.record_failure(_info(), "RuntimeError: CUDA out of memory")
    assert not store.is_done(key), "a failed attempt must not count as done"
    assert store.results().empty
    store.record_success(_info(), {"AP": 0.5}, {"AP": "up"})
    assert store.is_done(key)
    assert not store.is_done(RunKey(SHA, "coco_pose", "ci", 0, 1))  # other seed
    assert not store.is_done(RunKey(SHA, "coco_pose", "paper", 0, 0))  # other preset
    assert not store.is_done(RunKey(SHA, "coco_pose", "ci", 100, 0))  # other subset
    # a later failure of the same key (e.g. a --force re-run that crashed) keeps the earlier result
    store.record_failure(_info(), "boom")
    assert store.is_done(key)
    runs = store.runs()
    assert list(runs["status"]) == ["failed", "ok", "failed"]
    assert runs.iloc[0]["error"] == "RuntimeError: CUDA out of memory"


def test_force_rerun_replaces_rows(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    store.record_success(_info(finished_at=1.0), {"AP": 0.5, "AR": 0.6}, {"AP": "up", "AR": "up"})
    store.record_success(_info(seed=1), {"AP": 0.55, "AR": 0.65}, {"AP": "up", "AR": "up"})
    new_id = store.record_success(_info(finished_at=2.0), {"AP": 0.7}, {"AP": "up"})
    res = store.results()
    seed0 = res[res["seed"] == 0]
    assert len(seed0) == 1, "a re-run replaces every metric row of the key (AR is gone)"
    assert seed0.iloc[0]["value"] == 0.7 and seed0.iloc[0]["run_id"] == new_id
    assert len(res[res["seed"] == 1]) == 2, "other keys are untouched"
    assert not res.duplicated(["ckpt_sha256", "task", "preset", "subset", "seed", "metric"]).any()
    assert len(store.runs()) == 3, "every attempt stays in the history"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_refused(tmp_path, bad):
    store = ResultStore(tmp_path / "r.db")
    with pytest.raises(BenchmarkError, match="not finite"):
        store.record_success(_info(), {"AP": 0.5, "AR": bad}, {"AP": "up", "AR": "up"})
    assert store.results().empty and store.runs().empty, "nothing of the refused run is written"
    assert not store.is_done(_info().key)


def test_bad_metric_input_refused(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    with pytest.raises(BenchmarkError, match="direction"):
        store.record_success(_info(), {"AP": 0.5}, {"AP": "sideways"})
    with pytest.raises(BenchmarkError, match="no metric"):
        store.record_success(_info(), {}, {})
    assert store.runs().empty


def test_not_a_sqlite_file(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is a text file, not a database\n" * 50)
    with pytest.raises(BenchmarkError, match="not a SQLite results DB"):
        ResultStore(path)


def test_foreign_sqlite_db_and_newer_schema(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(BenchmarkError, match="not a results DB"):
        ResultStore(other)
    newer = tmp_path / "newer.db"
    ResultStore(newer)
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(BenchmarkError, match="newer") as exc:
        ResultStore(newer)
    assert exc.value.fix


N_PER_WRITER = 200


def _writer(path: str, wid: int, start) -> None:
    store = ResultStore(path)  # both processes also race on schema creation
    start.wait()
    for i in range(N_PER_WRITER):
        info = _info(task=f"task{wid}", seed=i, sha=f"{wid:064x}")
        if i % 10 == 9:
            store.record_failure(info, f"failure {i}")
        else:
            store.record_success(info, {"m1": float(i), "m2": float(-i)}, {"m1": "up", "m2": "down"})


def test_two_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "shared" / "bench.db")
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(path, w, start)) for w in (1, 2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, "a writer process failed"
    store = ResultStore(path)
    runs, res = store.runs(), store.results()
    ok_per_writer = N_PER_WRITER - N_PER_WRITER // 10
    assert len(runs) == 2 * N_PER_WRITER
    assert (runs["status"] == "failed").sum() == 2 * (N_PER_WRITER // 10)
    assert len(res) == 2 * ok_per_writer * 2
    for w in (1, 2):
        mine = res[res["task"] == f"task{w}"]
        assert sorted(set(mine["seed"])) == [i for i in range(N_PER_WRITER) if i % 10 != 9]
        assert set(mine["run_id"]) <= set(runs["run_id"])


def test_extra_is_stored_and_a_v1_db_is_migrated(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    store = ResultStore(db)
    with sqlite3.connect(db) as conn:  # make it a v1 DB: no extra column
        conn.execute("ALTER TABLE runs DROP COLUMN extra")
        conn.execute("PRAGMA user_version = 1")
    store = ResultStore(db)
    info = RunInfo(key=RunKey("a" * 64, "t", "ci", 0, 0), extra={"unreadable_test": 2})
    store.record_success(info, {"m": 1.0}, {"m": "up"})
    runs = store.runs()
    assert runs.iloc[-1]["extra"] == {"unreadable_test": 2}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
