"""End to end through the real console entry point: run, interrupt, resume, leaderboards, check, bad input."""

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark import checkpoint
from tests.conftest import REPO, make_ckpt, planned_task_dir, run_cli

pytestmark = pytest.mark.slow
PROBE = ["--tasks", "fashion_mnist_probe", "--data", "mini", "--subset", "300"]


def ok_rows(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        return pd.read_sql("SELECT task, seed, started_at FROM runs WHERE status = 'ok'", conn)


def test_list_shows_every_task_with_status(tmp_path):
    out = run_cli("list")
    assert out.returncode == 0, out.stderr
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:]}
    assert len(lines) == 28
    assert "implemented" in lines["ade20k_m2f"] and "mIoU↑" in lines["ade20k_m2f"]
    planned = run_cli("list", env={"MIMBENCH_TASK_PATH": str(planned_task_dir(tmp_path))}).stdout
    assert "not implemented" in next(ln for ln in planned.splitlines() if ln.startswith("planned_task"))
    assert "implemented" in lines["got10k"] and "AO↑" in lines["got10k"]
    assert "implemented" in lines["coco_pose"] and "AP↑" in lines["coco_pose"]
    assert "rmse↓" in lines["nyu_depth"]
    assert "implemented" in lines["fashion_mnist_probe"] and "present" in lines["fashion_mnist_probe"]
    suites = run_cli("list", "suites").stdout
    assert "geometric" in suites and "coco_pose, crowdpose, nyu_depth, kitti_depth, got10k, lasot" in suites


def test_run_interrupt_resume_leaderboard_and_check(tmp_path):
    ckpt = make_ckpt(tmp_path / "tiny_vit.pth")
    db, wd = tmp_path / "r.db", tmp_path / "wd"
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--ckpt", ckpt, *PROBE, "--seed", "0", "--seed", "1",
           "--seed", "2", "--work-dir", wd, "--db", db]
    proc = subprocess.Popen(list(map(str, cmd)), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        with contextlib.suppress(pd.errors.DatabaseError):  # the file may exist a moment before its tables
            if db.exists() and len(ok_rows(db)) >= 1:
                break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)  # mid-suite: seed 0 done, seed 1 running
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "re-run the same command to resume" in err
    first = ok_rows(db)
    assert len(first) in (1, 2)  # the kill may land just after seed 1 finished
    # a worker may finish its result.json just before the runner, stopping, stores it: the next run stores it
    kept = len(list(wd.rglob("result.json")))
    assert kept in (len(first), len(first) + 1)

    again = run_cli(*cmd[3:])
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("skipped, already done") == len(first)
    assert again.stderr.count("stored from the kept") == kept - len(first), again.stderr
    second = ok_rows(db)
    assert sorted(second.seed) == [0, 1, 2]
    # nothing that had finished ran again: its start time is unchanged and it has one ok attempt
    merged = second.merge(first, on=["task", "seed"], suffixes=("", "_before"))
    assert len(merged) == len(first) and (merged.started_at == merged.started_at_before).all()

    csv, md = tmp_path / "lb.csv", tmp_path / "lb.md"
    assert run_cli("leaderboard", "--db", db, "--format", "csv", "--out", csv).returncode == 0
    assert run_cli("leaderboard", "--db", db, "--format", "md", "--out", md, "--reference").returncode == 0
    table = pd.read_csv(csv)
    assert table.loc[0, "checkpoint"] == "tiny_vit" and table.loc[0, "seeds"] == 3
    top1 = table.loc[0, "fashion_mnist_probe/top1 ↑"]
    assert 10.0 < top1 <= 100.0  # better than chance (10 classes) even with random features
    text = md.read_text()
    assert "fashion_mnist_probe/top1 ↑" in text and "(reported)" in text

    ok = run_cli("check", "--baseline", csv, "--db", db)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    table["fashion_mnist_probe/top1 ↑"] = top1 + 5.0  # the baseline was better: current results regressed
    table.to_csv(tmp_path / "better.csv", index=False)
    bad = run_cli("check", "--baseline", tmp_path / "better.csv", "--db", db)
    assert bad.returncode == 1 and "REGRESSION" in bad.stdout
    assert run_cli("check", "--baseline", tmp_path / "better.csv", "--db", db, "--tolerance", "6").returncode == 0
    # a baseline result that is not in the DB (another checkpoint) fails the gate with its own exit code
    table = pd.read_csv(csv)  # the baseline as measured
    other = table.assign(checkpoint="other", sha256="0" * 12)
    pd.concat([table, other]).to_csv(tmp_path / "more.csv", index=False)
    missing = run_cli("check", "--baseline", tmp_path / "more.csv", "--db", db)
    assert missing.returncode == 3 and "MISSING" in missing.stdout, missing.stdout + missing.stderr
    assert run_cli("check", "--baseline", tmp_path / "more.csv", "--db", db, "--allow-missing").returncode == 0
    table.assign(seeds=5).to_csv(tmp_path / "seeds.csv", index=False)
    assert run_cli("check", "--baseline", tmp_path / "seeds.csv", "--db", db, "--strict").returncode == 3

    forced = run_cli("run", "--ckpt", ckpt, *PROBE, "--seed", "0", "--work-dir", wd, "--db", db, "--force")
    assert forced.returncode == 0 and "skipped" not in forced.stderr


def test_crashes_are_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMBENCH_TASK_PATH", str(REPO / "tests" / "plugins"))
    ckpt = make_ckpt(tmp_path / "tiny_vit.pth")
    db = tmp_path / "r.db"
    out = run_cli("run", "--ckpt", ckpt, "--suite", "testing", "--data", "mini", "--work-dir", tmp_path / "wd",
                  "--db", db)
    assert out.returncode == 1
    assert ("failed: crashing_task seed 0: task crashing_task crashed: RuntimeError: boom inside the runner"
            in out.stdout)
    assert "failed: nan_task seed 0: task nan_task produced non-finite score" in out.stdout
    assert "failed: killed_task seed 0: killed by signal SIGKILL" in out.stdout
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT task, status, error FROM runs ORDER BY task").fetchall()
        assert [r[:2] for r in rows] == [("crashing_task", "failed"), ("killed_task", "failed"), ("nan_task", "failed")]
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


def _bad(*args, cwd=None, env=None):
    out = run_cli(*args, cwd=cwd, env=env)
    lines = out.stderr.strip().splitlines()
    return out.returncode, lines


@pytest.mark.parametrize("case", ["missing_ckpt", "not_a_ckpt", "unknown_arch", "unknown_task", "unknown_suite",
                                  "missing_data", "unwritable_work_dir", "not_implemented", "partial"])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, tiny_vit_ckpt, case):
    base = ["run", "--tasks", "fashion_mnist_probe", "--work-dir", tmp_path / "wd", "--db", tmp_path / "r.db"]
    ckpt = tiny_vit_ckpt
    expect = {"missing_ckpt": "checkpoint not found", "not_a_ckpt": "is not a readable PyTorch checkpoint",
              "unknown_arch": "unknown backbone arch 'vit_nonexistent'",
              "unknown_task": "did you mean fashion_mnist_probe",
              "unknown_suite": "unknown suite 'semantics' — did you mean semantic",
              "missing_data": "task fashion_mnist_probe:",
              "unwritable_work_dir": "work dir", "not_implemented": "not implemented yet: planned_task",
              "partial": "does not fill the backbone"}[case]
    if case == "missing_ckpt":
        ckpt = tmp_path / "nope.pth"
    elif case == "not_a_ckpt":
        ckpt = tmp_path / "notes.txt"
        ckpt.write_text("hello")
    elif case == "unknown_arch":
        c = checkpoint.load_canonical(tiny_vit_ckpt)
        ckpt = checkpoint.save_canonical(tmp_path / "u.pth", c.state_dict, dict(c.meta, arch="vit_nonexistent"))
    elif case == "partial":
        c = checkpoint.load_canonical(tiny_vit_ckpt)
        sd = {k: v for k, v in c.state_dict.items() if "blocks.0" not in k}
        ckpt = checkpoint.save_canonical(tmp_path / "p.pth", sd, c.meta)
    if case == "unknown_task":
        base[2] = "fashion_mnist_prob"
    elif case == "unknown_suite":
        base[1:3] = ["--suite", "semantics"]
    elif case == "not_implemented":
        base[2] = "planned_task,fashion_mnist_probe"
    elif case == "missing_data":
        base += ["--data-root", tmp_path / "no_such_dir"]
    elif case == "unwritable_work_dir":
        (tmp_path / "file").write_text("x")
        base[base.index("--work-dir") + 1] = tmp_path / "file" / "wd"
    code, lines = _bad(*base, "--ckpt", ckpt, env={"MIMBENCH_TASK_PATH": str(planned_task_dir(tmp_path))})
    assert code == 2, lines
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and expect in errors[0], lines
    assert not any("Traceback" in ln for ln in lines)
    if case == "missing_data":
        assert "expected layout: train-images-idx3-ubyte.gz" in errors[0] and "docs/datasets.md" in errors[0]


def test_check_rejects_unknown_columns_and_missing_db(tmp_path):
    db = tmp_path / "r.db"
    code, lines = _bad("check", "--baseline", tmp_path / "b.csv", "--db", db)
    assert code == 2 and lines[-1].startswith("error: results DB not found")
    from benchmark.store import ResultStore

    ResultStore(db)
    pd.DataFrame({"checkpoint": ["x"], "sha256": ["ab"], "preset": ["ci"], "subset": [0],
                  "nonsense/metric ↑": [1.0]}).to_csv(tmp_path / "b.csv", index=False)
    code, lines = _bad("check", "--baseline", tmp_path / "b.csv", "--db", db)
    assert code == 2 and "unknown columns" in lines[-1] and "nonsense/metric" in lines[-1]
    pd.DataFrame({"checkpoint": ["x"], "sha256": ["ab"], "preset": ["ci"], "subset": [0]}).to_csv(
        tmp_path / "b.csv", index=False)
    code, lines = _bad("check", "--baseline", tmp_path / "b.csv", "--db", db)
    assert code == 2 and "has no metric column" in lines[-1]


def test_init_and_inspect(tmp_path):
    out = run_cli("init", "--arch", "vit_tiny_patch16_224", "--set", "img_size=32", "--set", "patch_size=8",
                  "--set", "depth=1", "--out", tmp_path / "r.pth")
    assert out.returncode == 0, out.stderr
    info = run_cli("inspect", tmp_path / "r.pth")
    assert info.returncode == 0 and "patch_size: 8" in info.stdout and "(100.0%)" in info.stdout


def test_convert_command_timm_and_foreign_pickle(tmp_path):
    import timm
    import torch

    model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
    torch.save({"model": model.state_dict()}, tmp_path / "timm.pth")
    out = run_cli("convert", "--from", "timm", "--arch", "vit_tiny_patch16_224", tmp_path / "timm.pth",
                  tmp_path / "canon.pth")
    assert out.returncode == 0, out.stderr
    assert "(100.0%)" in out.stdout
    loaded = checkpoint.load_backbone(tmp_path / "canon.pth")
    x = torch.randn(1, 3, 224, 224)
    model.reset_classifier(0)
    assert torch.allclose(loaded.eval()(x), model.eval()(x), atol=1e-5)

    torch.save({"model": {}, "config": Path("x")}, tmp_path / "foreign.pth")  # a pickled object of another kind
    code, lines = _bad("convert", "--from", "simmim", tmp_path / "foreign.pth", tmp_path / "o.pth")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Path" in lines[0]
