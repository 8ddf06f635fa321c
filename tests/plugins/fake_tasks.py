"""Adapters that misbehave on purpose, loaded through $MIMBENCH_TASK_PATH by the CLI tests."""

import os

from tasks.base import TaskAdapter


class _NoData(TaskAdapter):
    @classmethod
    def check_data(cls, spec, root):
        return None

    @classmethod
    def make_mini(cls, spec, out_dir, seed):
        out_dir.mkdir(parents=True, exist_ok=True)


class CrashingTask(_NoData):
    def run(self):
        raise RuntimeError("boom inside the runner")


class NanTask(_NoData):
    def run(self):
        return self.finish({"score": float("nan")})


class KilledTask(_NoData):
    def run(self):
        os.kill(os.getpid(), 9)  # as the kernel's OOM killer would


class SleepyTask(_NoData):
    """Sleeps $MIMBENCH_TEST_SLEEP_S seconds (default 2): the runner's --jobs tests watch two of them overlap."""

    def run(self):
        import time

        self.ctx.work_dir.mkdir(parents=True, exist_ok=True)
        (self.ctx.work_dir / "pid").write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("MIMBENCH_TEST_SLEEP_S", "2")))
        return {"score": float(self.ctx.seed)}
