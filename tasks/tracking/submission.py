"""The GOT-10k evaluation-server submission: one zip of every test sequence's boxes and per-frame times.

Layout (what the official toolkit's ``ExperimentGOT10k.report`` zips from its result folder)::

    <seq>/                       one folder per sequence, at the top of the zip
    <seq>/<seq>_001.txt          run 1: one line per frame, frame 1 (the initialisation box) included,
                                 "x,y,w,h" with 3 decimals (the toolkit's np.savetxt fmt '%.3f')
    <seq>/<seq>_002.txt, _003    further runs of a non-deterministic tracker (the server pools them)
    <seq>/<seq>_time.txt         one line per frame, seconds with 8 decimals ('%.8f'); with several runs one
                                 comma-separated column per run, in run order

Everything is validated before anything is written, and the zip is written to a temp file in the target folder
and renamed into place, so an error never leaves a partial submission. Entries carry a fixed timestamp, so the same
predictions always give the same bytes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.files import atomic_path

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry timestamps: reproducible bytes
_MAX_RUNS = 999  # the toolkit numbers runs with three digits


def _check_name(seq: str) -> None:
    if not isinstance(seq, str) or not seq or seq in {".", ".."} or any(c in seq for c in "/\\\n\r"):
        raise BenchmarkError(f"GOT-10k submission: {seq!r} is not a usable sequence name",
                             "use the folder names of the test set (e.g. GOT-10k_Test_000001)")


def _check_runs(seq: str, boxes: list, times: list) -> tuple[list[np.ndarray], np.ndarray]:
    """Validated (N, 4) box arrays of every run and the (N, runs) time table of one sequence."""
    if not isinstance(boxes, list | tuple) or not boxes:
        raise BenchmarkError(f"GOT-10k submission: {seq} has no run",
                             "pass a list with one (N, 4) box array per run")
    if len(boxes) > _MAX_RUNS:
        raise BenchmarkError(f"GOT-10k submission: {seq} has {len(boxes)} runs", f"pass at most {_MAX_RUNS}")
    if not isinstance(times, list | tuple) or len(times) != len(boxes):
        got = len(times) if isinstance(times, list | tuple) else type(times).__name__
        raise BenchmarkError(f"GOT-10k submission: {seq} has {len(boxes)} box runs but times for {got}",
                             "pass one per-frame time array per run, in the same order")
    runs = []
    for i, b in enumerate(boxes, start=1):
        arr = np.asarray(b, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) == 0:
            raise BenchmarkError(f"GOT-10k submission: {seq} run {i} has shape {arr.shape}",
                                 "pass an (N, 4) array of x, y, w, h, one row per frame, frame 1 included")
        if not np.isfinite(arr).all():
            frame = int(np.argwhere(~np.isfinite(arr))[0, 0]) + 1
            raise BenchmarkError(f"GOT-10k submission: {seq} run {i} has a NaN or infinite box (frame {frame})",
                                 "report a box on every frame (e.g. the last confident one), never NaN")
        if runs and len(arr) != len(runs[0]):
            raise BenchmarkError(f"GOT-10k submission: {seq} run {i} has {len(arr)} frames, run 1 {len(runs[0])}",
                                 "every run covers all frames of the sequence")
        runs.append(arr)
    n = len(runs[0])
    columns = []
    for i, t in enumerate(times, start=1):
        arr = np.asarray(t, dtype=np.float64)
        if arr.shape != (n,):
            raise BenchmarkError(f"GOT-10k submission: {seq} run {i} has times of shape {arr.shape} for {n} frames",
                                 "pass one time in seconds per frame, frame 1 included")
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise BenchmarkError(f"GOT-10k submission: {seq} run {i} has a NaN, infinite or negative time",
                                 "record the wall-clock seconds each frame took")
        columns.append(arr)
    return runs, np.stack(columns, axis=1)


def _box_text(boxes: np.ndarray) -> str:
    return "".join(f"{x:.3f},{y:.3f},{w:.3f},{h:.3f}\n" for x, y, w, h in boxes.tolist())


def _time_text(table: np.ndarray) -> str:
    return "".join(",".join(f"{v:.8f}" for v in row) + "\n" for row in table.tolist())


def write_got10k_submission(path: Path, predictions: dict[str, list[np.ndarray]],
                            times: dict[str, list[np.ndarray]]) -> Path:
    """Write the server zip at ``path`` (atomically) from {sequence: [boxes of run 1, run 2, ...]} and
    {sequence: [seconds per frame of run 1, ...]}; returns ``path``. Bad input raises BenchmarkError and writes
    nothing."""
    path = Path(path)
    if path.suffix != ".zip":
        raise BenchmarkError(f"GOT-10k submission: {path} does not end in .zip", "name the submission <name>.zip")
    if not predictions:
        raise BenchmarkError("GOT-10k submission: no sequences", "pass the predictions of every test sequence")
    if set(predictions) != set(times):
        missing = sorted(set(predictions) ^ set(times))
        raise BenchmarkError(f"GOT-10k submission: boxes and times cover different sequences: {', '.join(missing[:5])}",
                             "pass times for exactly the sequences that have boxes")
    entries: list[tuple[str, str]] = []
    for seq in sorted(predictions):
        _check_name(seq)
        runs, table = _check_runs(seq, predictions[seq], times[seq])
        for i, boxes in enumerate(runs, start=1):
            entries.append((f"{seq}/{seq}_{i:03d}.txt", _box_text(boxes)))
        entries.append((f"{seq}/{seq}_time.txt", _time_text(table)))

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        folders_done = set()
        for name, text in entries:
            folder = name.split("/", 1)[0] + "/"
            if folder not in folders_done:
                # folder entries as shutil.make_archive writes them (the toolkit's own zips have them)
                info = zipfile.ZipInfo(folder, date_time=_ZIP_TIME)
                info.external_attr = (0o40755 << 16) | 0x10  # a directory, for both Unix and DOS readers
                zf.writestr(info, b"")
                folders_done.add(folder)
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, text.encode("ascii"))
    return path
