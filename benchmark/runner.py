"""Plan and run tasks: one subprocess per (task, seed), skip finished results, show progress, record failures.

A result's identity is (checkpoint sha256, task, preset, subset, seed). Finished identities are skipped unless
``force``; so re-running an interrupted command resumes where it stopped. Each finished task is written to the
results DB in one transaction and to ``<work-dir>/<sha12>/<task>/<preset>-subset<N>-seed<S>/result.json``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import importlib.metadata
import json
import math
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoint, data, registry
from .errors import BenchmarkError, TaskFailed
from .registry import TaskSpec
from .store import ResultStore, RunInfo, RunKey
from .worker import PROGRESS

PACKAGES = ("torch", "torchvision", "timm", "mmengine", "mmcv", "mmdet", "mmsegmentation", "mmpose", "numpy")
REPO = Path(__file__).resolve().parent.parent
JOB_INFO = ("ckpt_path", "ckpt_label", "arch", "method", "suite", "task_version", "config_hash", "packages", "git_sha",
            "device")  # the RunInfo fields a job file carries


@dataclass
class RunOptions:
    ckpt: Path
    tasks: list[TaskSpec]
    seeds: list[int] | None = None  # None: each task's preset ``seeds`` (0..n-1), else seed 0
    preset: str = "ci"
    subset: int = 0
    data_root: str | None = None
    mini: bool = False
    work_dir: Path = Path("work_dirs")
    db: Path = Path("results/benchmark.db")
    force: bool = False
    device: str = "cpu"
    label: str | None = None
    allow_partial: bool = False
    explicit_tasks: bool = False  # tasks named with --tasks (an unimplemented one is an error, not a skip)
    debug: bool = False
    overrides: dict = field(default_factory=dict)  # --set KEY=VALUE over the preset's parameters
    nproc: int = 1  # >1: each task runs under torchrun with this many processes (DDP)
    launcher: str = "none"  # none | slurm (srun inside an allocation) | submitit (a Slurm job per task and seed)
    slurm: Any = None  # benchmark.slurm.SlurmOptions for launcher submitit
    vis_backend: str = "none"  # tensorboard: trained tasks write TensorBoard event files in their run dirs
    jobs: int = 1  # local runs: this many tasks at once, each in its own worker process

    @property
    def preset_label(self) -> str:
        return preset_label(self.preset, self.overrides)


def preset_label(preset: str, overrides: dict) -> str:
    """The preset as stored with results: overridden parameters make a different result identity."""
    if not overrides:
        return preset
    return preset + "+" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def seeds_for(spec: TaskSpec, opts: RunOptions, params: dict | None = None) -> list[int]:
    """--seed wins; otherwise the parameters may ask for several seeds (the linear probe's 5), else seed 0."""
    if opts.seeds is not None:
        return list(opts.seeds)
    if params is None:
        params = spec.presets.get(opts.preset, {})
    return list(range(int(params.get("seeds", 1))))


@dataclass
class Outcome:
    task: str
    seed: int
    status: str  # ok | skipped | failed | interrupted
    detail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def git_sha() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ensure_writable(folder: Path, what: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise BenchmarkError(f"{what} {folder} is not writable ({exc.strerror})",
                             f"choose another folder with --{what.replace(' ', '-')}") from exc
    return folder


def _select(opts: RunOptions) -> tuple[list[TaskSpec], list[str]]:
    todo = [s for s in opts.tasks if s.implemented]
    missing = [s.name for s in opts.tasks if not s.implemented]
    if missing and opts.explicit_tasks:
        raise BenchmarkError(f"not implemented yet: {', '.join(missing)}",
                             "drop them from --tasks (`benchmark list` shows what is implemented)")
    if not todo:
        raise BenchmarkError(f"none of the selected tasks is implemented yet ({', '.join(missing)})",
                             "see `benchmark list` for the implemented tasks")
    return todo, missing


def _check_data(specs: list[TaskSpec], opts: RunOptions) -> None:
    """Fail before any work if a real data root is missing (the worker checks the details again)."""
    if opts.mini:
        return
    from . import registry

    for spec in specs:
        registry.load_adapter(spec).check_data(spec, data.real_root(spec, opts.data_root))


class Progress:
    """A bar per suite and one per running task (tqdm on a terminal), plain lines otherwise."""

    def __init__(self, total: int, bars: bool = True, parallel: bool = False):
        self.tty = bars and not parallel and sys.stderr.isatty()
        self.parallel = parallel
        self.total, self.done = total, 0
        self.lock = threading.Lock()  # tasks run side by side (--jobs) end from several threads
        if self.tty:
            from tqdm import tqdm

            self.suite = tqdm(total=total, desc="suite", position=0, unit="task", leave=True)
            self.task = tqdm(total=1000, position=1, leave=False, bar_format="{desc} {bar} {percentage:3.0f}% "
                             "[{elapsed}<{remaining}]{postfix}")

    def start(self, name: str) -> None:
        if self.tty:
            self.task.reset()
            self.task.set_description(name)
        elif self.parallel:  # several tasks run at once: only their ends are counted
            print(f"started {name}", file=sys.stderr, flush=True)
        else:
            print(f"[{self.done + 1}/{self.total}] {name} ...", file=sys.stderr, flush=True)

    def update(self, frac: float, msg: str) -> None:
        if self.tty:
            self.task.n = int(1000 * frac)
            self.task.set_postfix_str(msg[:40], refresh=True)

    def end(self, line: str) -> None:
        with self.lock:
            self.done += 1
            if self.tty:
                self.suite.write(line)
                self.suite.update(1)
            else:
                print(f"[{self.done}/{self.total}] {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            self.task.close()
            self.suite.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_command(job: dict) -> list[str]:
    """How one task is started: a plain process, torchrun with N processes, or srun inside a Slurm allocation."""
    worker = ["-m", "benchmark.worker", str(job["job_path"])]
    if job.get("launcher") == "slurm":
        return ["srun", "--kill-on-bad-exit=1", sys.executable, "-u", *worker]
    if int(job.get("nproc", 1)) > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={int(job['nproc'])}",
                "--nnodes=1", f"--master_port={_free_port()}", *worker]
    return [sys.executable, *worker]


def _finished_result(job: dict) -> dict | None:
    """The result.json a finished attempt of exactly this job left behind, if any (None when absent, partial or
    of another job)."""
    path = Path(job["result_path"])
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = ("task", "task_version", "ckpt_sha256", "preset", "overrides", "subset", "seed")
    old = result.get("job", {}) if isinstance(result, dict) else {}
    metrics = result.get("metrics")
    if not all(old.get(k) == job.get(k) for k in same) or not isinstance(metrics, dict) or not metrics:
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values()):
        return None  # a run that produced no valid score runs again
    return result


def _store_success(store: ResultStore, info: RunInfo, spec: TaskSpec, result: dict, job: dict) -> None:
    """The DB row of a finished attempt; if the DB cannot be written, stop with one line (the result is kept)."""
    try:
        store.record_success(info, result["metrics"], {m.name: m.direction for m in spec.metrics})
    except TaskFailed:
        raise
    except BenchmarkError as exc:
        raise BenchmarkError(f"{exc.problem}; the finished result is kept in {job['result_path']}",
                             "make the DB writable (free disk space), then re-run the same command: it stores the "
                             "kept result without re-running the task") from exc


def slot_devices(slot: int, nproc: int, visible: str | None = None) -> str:
    """The GPUs of parallel slot ``slot`` (--jobs): its own ``nproc`` devices out of those visible, so tasks side by
    side never share a GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    return ",".join(devices[slot * nproc:(slot + 1) * nproc])


def _run_worker(job: dict, progress: Progress, keep_fds: tuple[int, ...] = (), stop=None) -> tuple[int, str]:
    """Run the worker (it inherits ``keep_fds``: the result's lock) and return (exit code, last error line).

    The worker writes ``worker.log`` itself (its stdout and stderr are the file, appended: every attempt is kept,
    under a header line), so its log survives this process being killed; the runner only follows the file for
    progress and ``error:`` lines."""
    job_path = Path(job["job_path"])
    job_path.write_text(json.dumps(job, indent=2))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if str(job["device"]).startswith("cuda") and job.get("slot") is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot_devices(int(job["slot"]), int(job.get("nproc", 1)))
    if not str(job["device"]).startswith("cuda"):
        env["CUDA_VISIBLE_DEVICES"] = ""  # --device cpu means CPU even where mmengine would pick a GPU
        if int(job.get("jobs", 1)) > 1 and "OMP_NUM_THREADS" not in os.environ:
            # tasks side by side share the cores instead of each starting a thread per core
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(job["jobs"])))
    last_error = ""
    with open(job["log"], "a") as log:
        log.write(f"===== attempt started {time.strftime('%Y-%m-%d %H:%M:%S')} by pid {os.getpid()} =====\n")
        log.flush()
        start = log.tell()
        proc = subprocess.Popen(worker_command(job), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True, pass_fds=keep_fds)
    try:
        for line in _follow(Path(job["log"]), start, proc, stop=stop):
            if line.startswith(PROGRESS):
                parts = line.split(maxsplit=2)
                progress.update(float(parts[1]), parts[2].strip() if len(parts) > 2 else "")
            elif line.startswith("error: "):
                last_error = line[len("error: "):].strip()
        code = proc.wait()
    except BaseException:
        # Ctrl-C / SIGTERM of the runner: stop the worker's whole process group (torchrun children too).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        raise
    if code < 0:
        last_error = f"killed by signal {signal.Signals(-code).name} (out of memory?)"
    return code, last_error or (f"exit code {code}" if code else "")


def _follow(path: Path, offset: int, proc: subprocess.Popen, poll_s: float = 0.2, stop=None):
    """The complete lines written to ``path`` after ``offset`` while ``proc`` runs, then the rest. A set ``stop``
    event (a parallel suite being stopped) ends it like Ctrl-C."""
    pending = ""
    with open(path, errors="replace") as fh:
        fh.seek(offset)
        while True:
            chunk = fh.read()
            if chunk:
                *lines, pending = (pending + chunk).split("\n")
                yield from lines
            elif proc.poll() is not None:
                rest = pending + fh.read()
                yield from rest.splitlines()
                return
            elif stop is not None and stop.is_set():
                raise KeyboardInterrupt
            else:
                time.sleep(poll_s)


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+=," else "_" for c in label)[:120]


def _config_hash(spec: TaskSpec, opts: RunOptions) -> str:
    if not opts.overrides:
        return spec.config_hash(opts.preset)
    import hashlib

    blob = json.dumps([spec.config_hash(opts.preset), opts.overrides], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(opts: RunOptions) -> list[Outcome]:
    if opts.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BenchmarkError("--device cuda was asked for but no CUDA device is visible", "use --device cpu")
        if opts.jobs > 1 and opts.jobs * opts.nproc > torch.cuda.device_count():
            raise BenchmarkError(f"--jobs {opts.jobs} x --nproc {opts.nproc} needs {opts.jobs * opts.nproc} GPUs, "
                                 f"{torch.cuda.device_count()} are visible", "lower --jobs or --nproc")
    specs, skipped_unimplemented = _select(opts)
    # every task's parameters (preset, --set keys and types) before any data, checkpoint or training
    params = {spec.name: registry.resolve_params(spec, opts.preset, opts.overrides) for spec in specs}
    _check_data(specs, opts)
    work_dir = ensure_writable(Path(opts.work_dir), "work dir")
    ensure_writable(Path(opts.db).parent, "db")

    # Validate the checkpoint once, up front: format, arch and 100% coverage (or --allow-partial).
    ckpt = checkpoint.load_canonical(opts.ckpt)
    checkpoint.load_weights(checkpoint.build_model(ckpt.meta), ckpt.state_dict, allow_partial=opts.allow_partial,
                            name=str(opts.ckpt))
    sha = checkpoint.file_sha256(opts.ckpt)
    label = opts.label or Path(opts.ckpt).stem
    store = ResultStore(opts.db)
    versions, commit = package_versions(), git_sha()

    outcomes = [Outcome(name, -1, "skipped", "not implemented yet") for name in skipped_unimplemented]
    for name in skipped_unimplemented:
        print(f"skip {name}: not implemented yet", file=sys.stderr)
    plan = [(spec, seed) for spec in specs for seed in seeds_for(spec, opts, params[spec.name])]
    meta = dict(ckpt_meta=ckpt.meta, sha=sha, label=label, versions=versions, commit=commit, work_dir=work_dir)
    if opts.launcher == "submitit":
        return outcomes + _run_on_slurm(plan, opts, store, meta)
    progress = Progress(len(plan), parallel=opts.jobs > 1)
    one = functools.partial(_one, opts=opts, store=store, progress=progress, **meta)
    try:
        if opts.jobs <= 1:
            for spec, seed in plan:
                outcomes += one(spec, seed)
        else:
            outcomes += _in_parallel(_longest_first(plan, store, opts), opts.jobs, one)
    finally:
        progress.close()
    return outcomes


def _one(spec: TaskSpec, seed: int, *, opts: RunOptions, store: ResultStore, progress: Progress, stop=None,
         slot: int | None = None, **meta) -> list[Outcome]:
    """One (task, seed) of the plan: skipped when stored, else claimed and attempted."""
    key = RunKey(meta["sha"], spec.name, opts.preset_label, int(opts.subset), int(seed))

    def skip(detail: str, message: str) -> list[Outcome]:
        progress.end(f"{spec.name} seed {seed}: skipped, {message}")
        return [Outcome(spec.name, seed, "skipped", detail)]

    action, why = stored_state(store, key, spec, opts)
    if action == "skip":
        return skip("already done (--force re-runs)", why)
    run_dir = _run_dir(meta["work_dir"], meta["sha"], spec, opts, seed)
    with claim(run_dir) as (holder, lock_fd):
        if holder is not None:
            return skip(f"running in {holder}", f"another benchmark process is running it ({holder}); re-run this "
                                                "command when it has finished")
        action, why = stored_state(store, key, spec, opts)  # another process may have finished it meanwhile
        if action == "skip":
            return skip("already done (--force re-runs)", why)
        if action == "rerun":
            print(f"{spec.name} seed {seed}: {why}", file=sys.stderr)
        if action in ("rerun", "force"):
            _set_aside(run_dir)
        return [_attempt(spec, seed, key, run_dir, opts, store, progress, lock_fd, stop=stop, slot=slot, **meta)]


def _longest_first(plan: list, store: ResultStore, opts: RunOptions) -> list:
    """With --jobs: the tasks that took longest before (median over stored runs of the same preset and subset, any
    checkpoint) start first, so that no long task runs alone at the end; tasks never timed keep their order after
    them (the order of --tasks: list long ones first)."""
    runs = store.runs()
    done = runs[(runs.status == "ok") & (runs.preset == opts.preset_label) & (runs.subset == int(opts.subset))]
    typical = done.groupby("task").wall_s.median().to_dict() if len(done) else {}
    return sorted(plan, key=lambda item: -typical.get(item[0].name, 0.0))  # stable: ties keep their order


def _in_parallel(plan: list, jobs: int, one) -> list[Outcome]:
    """``jobs`` plan items at once (threads that each wait on one worker process). Ctrl-C or an error that stops
    the suite (e.g. an unwritable DB) stops every running worker; their runs are recorded as interrupted."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    stop = threading.Event()
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)

    def in_a_slot(spec: TaskSpec, seed: int) -> list[Outcome]:
        slot = slots.get()  # on GPUs a slot is a fixed set of devices (see _run_worker)
        try:
            return one(spec, seed, stop=stop, slot=slot)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="task") as pool:
        futures = [pool.submit(in_a_slot, spec, seed) for spec, seed in plan]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            stop.set()
            raise
        finally:
            if any(f.done() and f.exception() is not None for f in futures):
                stop.set()
            if stop.is_set():
                for f in futures:
                    f.cancel()
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    if errors:  # what stopped the suite, not the interruptions it caused in the other workers
        raise next((e for e in errors if not isinstance(e, KeyboardInterrupt)), errors[0])
    return [outcome for f in futures for outcome in f.result()]


def _run_dir(work_dir: Path, sha: str, spec: TaskSpec, opts: RunOptions, seed: int) -> Path:
    return work_dir / sha[:12] / spec.name / f"{_safe(opts.preset_label)}-subset{opts.subset}-seed{seed}"


def _set_aside(run_dir: Path) -> None:
    """A fresh attempt starts in an empty run dir; the old one is kept as history."""
    if run_dir.exists():
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.attempt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"))


def _run_on_slurm(plan: list, opts: RunOptions, store: ResultStore, meta: dict) -> list[Outcome]:
    """Every (task, seed) to do as one job of a Slurm job array (submitit); this process only stores results.

    Finished results are skipped (or stored from their result.json when a job finished while no submitter ran);
    jobs still pending or running from an earlier submission are attached to, not submitted again."""
    from . import slurm

    progress = Progress(len(plan), bars=False)  # one line per event: the jobs' own progress is in their worker.log
    outcomes: list[Outcome] = []
    todo: list[dict] = []  # spec, seed, job, info, live record (None: submit)
    for spec, seed in plan:
        key = RunKey(meta["sha"], spec.name, opts.preset_label, int(opts.subset), int(seed))
        action, why = stored_state(store, key, spec, opts)
        if action == "skip":
            outcomes.append(Outcome(spec.name, seed, "skipped", "already done (--force re-runs)"))
            progress.end(f"{spec.name} seed {seed}: skipped, {why}")
            continue
        run_dir = _run_dir(meta["work_dir"], meta["sha"], spec, opts, seed)
        live = slurm.live_record(run_dir)
        if live is not None and action == "force":
            slurm.cancel(live["job_id"])
            print(f"{spec.name} seed {seed}: cancelled Slurm job {live['job_id']} (--force)", file=sys.stderr)
            live = None
        if live is None and action in ("rerun", "force"):
            if action == "rerun":
                print(f"{spec.name} seed {seed}: {why}", file=sys.stderr)
            _set_aside(run_dir)
        job, info = _new_job(spec, seed, key, run_dir, opts, **meta)
        kept = _finished_result(job) if live is None and action == "run" else None
        if kept is not None:  # a job that finished while no submitter watched: store it
            outcomes.append(_store_kept(spec, seed, job, info, kept, store, progress,
                                        "stored from the finished Slurm job's result.json"))
            continue
        todo.append(dict(spec=spec, seed=seed, job=job, info=info, live=live, run_dir=run_dir))
    if not todo:
        return outcomes
    slurm.preflight(opts.slurm)
    fresh = [t for t in todo if t["live"] is None]
    folder = Path(meta["work_dir"]).resolve() / "slurm"
    for t in todo:
        if t["live"] is not None:
            t["job_id"] = t["live"]["job_id"]
            print(f"{t['spec'].name} seed {t['seed']}: attached to Slurm job {t['job_id']} (submitted earlier)",
                  file=sys.stderr)
    if fresh:
        for t in fresh:
            Path(t["job"]["result_path"]).unlink(missing_ok=True)
            Path(t["job"]["job_path"]).write_text(json.dumps(t["job"], indent=2))
        handles = slurm.submit([t["job"] for t in fresh], opts.slurm, opts.nproc, folder)
        for t, handle in zip(fresh, handles):
            t["job_id"] = str(handle.job_id)
            slurm.write_record(t["run_dir"], t["job_id"], folder)
        print(f"submitted {len(fresh)} Slurm job(s) ({', '.join(t['job_id'] for t in fresh)}); submitit logs: "
              f"{folder}", file=sys.stderr)
    try:
        outcomes += _watch_slurm(todo, store, progress, opts.slurm.poll_s)
    except KeyboardInterrupt:
        print(f"interrupted: the Slurm jobs keep running; re-run the same command to attach to them, or store what "
              f"they finish with `benchmark collect --work-dir {opts.work_dir} --db {opts.db}`", file=sys.stderr)
        raise
    return outcomes


def _watch_slurm(todo: list[dict], store: ResultStore, progress: Progress, poll_s: float) -> list[Outcome]:
    """Poll sacct until every job has ended; store each result (or the failure and its reason) as it ends."""
    from . import slurm

    outcomes: list[Outcome] = []
    shown: dict[str, str] = {}
    gone: dict[str, int] = {}  # polls in a row a job was in neither sacct nor squeue
    waiting = {t["job_id"]: t for t in todo}
    while waiting:
        states = slurm.states(list(waiting))
        for job_id, t in list(waiting.items()):
            state, node, elapsed = states.get(job_id, ("", "", 0))
            name = f"{t['spec'].name} seed {t['seed']}"
            gone[job_id] = gone.get(job_id, 0) + 1 if state == "GONE" else 0
            if state == "GONE":  # ended without ever running (cancelled while pending) once confirmed
                state = "CANCELLED" if gone[job_id] >= 4 else ""
            if state and state != shown.get(job_id):
                shown[job_id] = state
                print(f"{name}: Slurm job {job_id} {state}" + (f" on {node}" if node and state != "PENDING" else ""),
                      file=sys.stderr, flush=True)
            if not state or state in slurm.LIVE:
                continue
            del waiting[job_id]
            job, info = t["job"], t["info"]
            kept = _finished_result(job)
            if kept is not None:
                kept.setdefault("extra", {})["slurm_elapsed_s"] = float(elapsed)
                outcomes.append(_store_kept(t["spec"], t["seed"], job, info, kept, store, progress,
                                            f"Slurm job {job_id} on {node}"))
                continue
            reason = slurm.failure_reason(state, Path(job["log"]))
            info.finished_at = time.time()
            info.wall_s = float(elapsed)
            info.extra = {"slurm_job_id": job_id, "slurm_state": state, "slurm_node": node}
            store.record_failure(info, reason)
            progress.end(f"{name}: FAILED (Slurm job {job_id}, {state}): {reason} (log: {job['log']})")
            outcomes.append(Outcome(t["spec"].name, t["seed"], "failed", reason, wall_s=info.wall_s))
        if waiting:
            time.sleep(poll_s)
    return outcomes


def stored_state(store: ResultStore, key: RunKey, spec: TaskSpec, opts: RunOptions) -> tuple[str, str]:
    """What to do with a result identity: ('run' | 'force' | 'rerun' | 'skip', why).

    A stored result of an older task version is stale (a spec's ``version`` changes when its numbers stop being
    comparable): it runs again as a fresh attempt, the old rows stay as history. A stored result whose data
    fingerprint (names, sizes and dates of the layout entries) differs from the data now found is kept, with a
    warning: moving or re-copying a dataset changes the fingerprint without changing the result, so only the user
    can tell (``--force`` re-runs).
    """
    if opts.force:
        return "force", "--force"
    stored = store.stored_run(key)
    if stored is None:
        return "run", ""
    if stored["task_version"] and str(stored["task_version"]) != str(spec.version):
        return "rerun", (f"the stored result is from task version {stored['task_version']}, the task is now "
                         f"version {spec.version}: running it again")
    why = "already done (--force re-runs it)"
    root = data.mini_root(spec, Path(opts.work_dir).resolve() / "mini_data") if opts.mini else \
        data.real_root(spec, opts.data_root)
    if stored["data_fingerprint"] and root.exists() and data.fingerprint(spec, root) != stored["data_fingerprint"]:
        why += (f"; warning: its data ({stored['data_root']}) had another fingerprint than {root} has now "
                "(files added, removed or re-copied?): --force re-runs it on the current data")
    return "skip", why


@contextlib.contextmanager
def claim(run_dir: Path):
    """Hold ``.<run dir>.lock`` (beside the run dir) while one result is produced: yields (None, fd) to the owner,
    (who holds it, None) when another process does. An flock dies with its holders (this runner and the worker,
    which inherits the descriptor), so a killed run never leaves a stale lock behind."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f".{run_dir.name}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
        else:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            fh.flush()
            holder = None
        yield holder, (fh.fileno() if holder is None else None)


def _new_job(spec: TaskSpec, seed: int, key: RunKey, run_dir: Path, opts: RunOptions, *, ckpt_meta: dict, sha: str,
             label: str, versions: dict, commit: str, work_dir: Path) -> tuple[dict, RunInfo]:
    """The worker's job file content and the DB row's metadata of one attempt in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    job = {"task": spec.name, "task_version": str(spec.version), "ckpt": str(Path(opts.ckpt).resolve()),
           "ckpt_sha256": sha,
           "data_root": opts.data_root, "mini": opts.mini, "mini_dir": str(work_dir.resolve() / "mini_data"),
           "preset": opts.preset, "overrides": opts.overrides, "subset": int(opts.subset), "seed": int(seed),
           "nproc": int(opts.nproc), "launcher": "slurm" if opts.launcher == "submitit" else opts.launcher,
           "code_version": commit,
           "work_dir": str(run_dir.resolve()), "cache_dir": str(work_dir.resolve() / "cache"),
           "device": opts.device, "allow_partial": opts.allow_partial, "debug": opts.debug,
           "vis_backend": opts.vis_backend, "jobs": int(opts.jobs),
           "result_path": str(run_dir.resolve() / "result.json"),
           "log": str(run_dir.resolve() / "worker.log"),
           "job_path": str(run_dir.resolve() / "job.json")}
    info = RunInfo(key=key, ckpt_path=str(Path(opts.ckpt).resolve()), ckpt_label=label,
                   arch=ckpt_meta.get("arch", ""), method=ckpt_meta.get("method", ""), suite=spec.suite,
                   task_version=spec.version, config_hash=_config_hash(spec, opts),
                   data_root=opts.data_root or ("mini" if opts.mini else ""), data_fingerprint="",
                   packages=versions, git_sha=commit, device=opts.device, started_at=time.time(),
                   finished_at=0.0, wall_s=0.0)
    job["info"] = {k: getattr(info, k) for k in JOB_INFO}  # what `benchmark collect` needs to store the result
    return job, info


def _store_kept(spec: TaskSpec, seed: int, job: dict, info: RunInfo, kept: dict, store: ResultStore,
                progress: Progress, how: str) -> Outcome:
    """Store a finished attempt's result.json (its DB write failed, or it ran as a cluster job)."""
    info.started_at = info.finished_at = Path(job["result_path"]).stat().st_mtime
    info.data_root, info.data_fingerprint = kept["data_root"], kept["data_fingerprint"]
    info.extra = dict(kept.get("extra") or {})
    info.wall_s = float(info.extra.get("slurm_elapsed_s", 0.0))
    _store_success(store, info, spec, kept, job)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in kept["metrics"].items())
    progress.end(f"{spec.name} seed {seed}: ok, {how}  {shown}")
    return Outcome(spec.name, seed, "ok", shown, kept["metrics"], info.wall_s)


def _attempt(spec: TaskSpec, seed: int, key: RunKey, run_dir: Path, opts: RunOptions, store: ResultStore,
             progress: Progress, lock_fd: int, stop=None, slot: int | None = None, **meta) -> Outcome:
    """One attempt at one result, in ``run_dir``: the worker subprocess, then the DB row (ok or failed)."""
    job, info = _new_job(spec, seed, key, run_dir, opts, **meta)
    if slot is not None:
        job["slot"] = slot
    kept = _finished_result(job)
    if kept is not None:  # finished earlier, but its DB write failed (e.g. a full disk): store it, do not re-run
        return _store_kept(spec, seed, job, info, kept, store, progress,
                           f"stored from the kept {job['result_path']}")
    progress.start(f"{spec.name} seed {seed}")
    try:
        Path(job["result_path"]).unlink(missing_ok=True)
        code, error = _run_worker(job, progress, keep_fds=(lock_fd,), stop=stop)
    except KeyboardInterrupt:
        info.finished_at = time.time()
        info.wall_s = info.finished_at - info.started_at
        store.record_failure(info, "interrupted")
        raise
    except OSError as exc:  # the runner's own writes (log, job file) on a full or read-only disk
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        code, error = 1, f"disk full: {exc.filename or run_dir} ({exc.strerror})"
    info.finished_at = time.time()
    info.wall_s = info.finished_at - info.started_at
    if code == 0:
        result = json.loads(Path(job["result_path"]).read_text())
        info.data_root, info.data_fingerprint = result["data_root"], result["data_fingerprint"]
        info.extra = dict(result.get("extra") or {})
        try:
            _store_success(store, info, spec, result, job)
        except TaskFailed as exc:  # e.g. a NaN metric: a failed task, not a failed suite
            code, error = 1, str(exc)
    if code == 0:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items())
        progress.end(f"{spec.name} seed {seed}: ok in {info.wall_s:.1f}s  {shown}")
        return Outcome(spec.name, seed, "ok", shown, result["metrics"], info.wall_s)
    store.record_failure(info, error)
    progress.end(f"{spec.name} seed {seed}: FAILED in {info.wall_s:.1f}s: {error} (log: {job['log']})")
    return Outcome(spec.name, seed, "failed", error, wall_s=info.wall_s)
