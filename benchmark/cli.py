"""``benchmark``: the command line. Thin: parse arguments, call the modules, print one-line errors.

Exit codes: 0 ok; 1 a task failed or a regression was found; 2 bad input (one ``error:`` line); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from .errors import BenchmarkError
from .reference import REFERENCE_CSV

DEFAULT_DB = "results/benchmark.db"


MAX_SEED = 2**31 - 1  # numpy / mmengine seeds are 32-bit
MAX_SUBSET = 10_000_000  # larger than any split the suite reads (iNat18 train: 437,513): a typo, not a subset


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"seeds must be integers, got {text!r}") from exc
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be integers from 0 to {MAX_SEED}, got {text!r}")
    return seeds


def _subset(text: str) -> int:
    try:
        n = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--subset takes a whole number, got {text!r}") from exc
    if not 0 <= n <= MAX_SUBSET:
        raise argparse.ArgumentTypeError(f"--subset must be 0 (the full split) to {MAX_SUBSET:,}, got {n}")
    return n


def _kv(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def _kv_str(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), value.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmark", description="SimMIM pre-training and transfer benchmark.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="tasks and suites, with metrics and data availability")
    ls.add_argument("what", nargs="?", choices=["tasks", "suites"], default="tasks")
    ls.add_argument("--data-root", help="report whether each task's data is present under this folder")

    pa = sub.add_parser("params", help="a task's parameters: type, default, each preset's value, meaning")
    pa.add_argument("task")
    pa.add_argument("--preset", help="only this preset (default: all of the task's presets)")

    run = sub.add_parser("run", help="run tasks on a checkpoint, store results")
    sel = run.add_mutually_exclusive_group(required=True)
    sel.add_argument("--suite", help="semantic | geometric | combined | demo | all")
    sel.add_argument("--tasks", help="comma-separated task or group names (e.g. coco_pose,k12)")
    run.add_argument("--ckpt", required=True, type=Path, help="canonical checkpoint (see `benchmark convert`)")
    run.add_argument("--name", help="label of the checkpoint in leaderboards (default: file name)")
    run.add_argument("--data-root", help="folder holding the datasets (each task's sub-folder under it)")
    run.add_argument("--data", choices=["real", "mini"], default="real",
                     help="mini: generate small learnable data in the real layouts under the work dir")
    run.add_argument("--subset", type=_subset, default=0, help="deterministic subset of N samples per split (0: all)")
    run.add_argument("--seed", dest="seeds", type=_seeds, action="extend",
                     help="one or more seeds (default: the preset's `seeds` count, e.g. 0..4 for the linear probe; "
                          "else 0)")
    run.add_argument("--preset", default="ci", help="paper | ci (default ci)")
    run.add_argument("--work-dir", type=Path, default=Path("work_dirs"))
    run.add_argument("--db", type=Path, default=Path(DEFAULT_DB))
    run.add_argument("--force", action="store_true", help="re-run results that already exist")
    run.add_argument("--device", default="cpu", help="cpu | cuda")
    run.add_argument("--set", dest="overrides", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                     help="override a preset parameter (repeatable), e.g. --set iters=300; stored as preset "
                          "'ci+iters=300'")
    run.add_argument("--nproc", type=int, default=1,
                     help="processes per task: >1 runs each task under torchrun (DDP; gloo on CPU, nccl on GPUs)")
    run.add_argument("--jobs", type=int, default=1,
                     help="tasks at once on this machine, each its own worker process (default 1); on a CPU each "
                          "gets cores / N threads unless OMP_NUM_THREADS is set")
    run.add_argument("--launcher", choices=["none", "slurm", "submitit"], default="none",
                     help="slurm: start each task with srun inside the current allocation (one process per task "
                          "slot); submitit: submit every (task, seed) as a Slurm job (one job array) from a login "
                          "node and store the results as they finish")
    sl = run.add_argument_group("Slurm jobs (--launcher submitit)")
    sl.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    sl.add_argument("--nodes", type=int, default=1, help="nodes per job (default 1)")
    sl.add_argument("--gpus-per-task", type=int, default=0,
                    help="GPUs per Slurm task; each job runs --nproc tasks per node (default 0: CPU jobs)")
    sl.add_argument("--cpus-per-task", type=int, help="CPUs per Slurm task (data loading workers + 1)")
    sl.add_argument("--mem", help="memory per node in Slurm syntax, e.g. 64G")
    sl.add_argument("--timeout-min", type=int, default=24 * 60,
                    help="time limit per job in minutes (default 1440); a job that reaches it is requeued and "
                         "resumes from its last checkpoint")
    sl.add_argument("--slurm-opt", dest="slurm_opts", type=_kv_str, action="append", default=[], metavar="KEY=VALUE",
                    help="any other #SBATCH option (repeatable), e.g. --slurm-opt account=vision --slurm-opt qos=high")
    sl.add_argument("--max-parallel", type=int, default=256, help="jobs of the array running at once")
    run.add_argument("--vis-backend", choices=["none", "tensorboard"], default="none",
                     help="tensorboard: trained tasks write loss / lr / metric curves as TensorBoard event files in "
                          "their run dirs (`tensorboard --logdir WORK_DIR`)")
    run.add_argument("--allow-partial", action="store_true",
                     help="accept a checkpoint that fills less than 100%% of the backbone (not recommended)")

    pl = sub.add_parser("plan", help="the resolved recipe of each task for a checkpoint (every value with its source), "
                                      "FLOPs and GPU-hours, and the mmengine configs, without training")
    psel = pl.add_mutually_exclusive_group(required=True)
    psel.add_argument("--suite", help="semantic | geometric | combined | demo | all")
    psel.add_argument("--tasks", help="comma-separated task or group names")
    pl.add_argument("--ckpt", required=True, type=Path, help="canonical checkpoint: its family picks the recipe")
    pl.add_argument("--preset", default="paper", help="paper | ci | ... (default paper)")
    pl.add_argument("--set", dest="overrides", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset parameter, as for `run`")
    pl.add_argument("--nproc", type=int, default=8, help="processes (GPUs) the run would use (default 8)")
    pl.add_argument("--gpu", default="H100", help="GPU for the GPU-hour estimate: H100, H200, A100, V100, L40S, 4090")
    pl.add_argument("--data-root", type=Path, help="the real datasets (sizes and FLOPs from them); default: mini "
                                                   "data at the real image sizes, sizes from the specs")
    pl.add_argument("--no-flops", dest="flops", action="store_false",
                    help="skip building the model and measuring FLOPs (recipe and lengths only)")
    pl.add_argument("--config-out", type=Path, metavar="DIR", help="write each task's mmengine config as DIR/<task>.py")
    pl.add_argument("--json", action="store_true", help="print one JSON list instead of the tables")
    pl.add_argument("--work-dir", type=Path, help="keep the generated mini data here for the next plan (default: a "
                                                  "temporary folder, removed)")

    lb = sub.add_parser("leaderboard", help="CSV / Markdown leaderboard or a static HTML site from the results DB")
    lb.add_argument("--db", type=Path, default=Path(DEFAULT_DB))
    lb.add_argument("--suite", help="only this suite's tasks")
    lb.add_argument("--format", choices=["csv", "md", "html"], required=True)
    lb.add_argument("--out", type=Path, required=True,
                    help="the file to write; for html a folder (index.html, plotly.min.js, figures)")
    lb.add_argument("--analysis", type=Path, action="append", default=[], metavar="DIR",
                    help="html only: the --out folder of `benchmark analyze`, its figures and tables shown on the site "
                         "(repeatable)")
    lb.add_argument("--reference", nargs="?", const=str(REFERENCE_CSV), default=None, metavar="CSV",
                    help="add the paper's reported numbers as marked rows (default file: results/reference/paper.csv)")

    co = sub.add_parser("collect", help="store the finished results of a work dir that the results DB lacks "
                                        "(a failed DB write, a killed runner, jobs run elsewhere)")
    co.add_argument("--work-dir", type=Path, default=Path("work_dirs"))
    co.add_argument("--db", type=Path, default=Path(DEFAULT_DB))

    ck = sub.add_parser("check", help="compare the newest results with a baseline leaderboard CSV")
    ck.add_argument("--baseline", type=Path, required=True)
    ck.add_argument("--db", type=Path, default=Path(DEFAULT_DB))
    tol = ck.add_mutually_exclusive_group()
    tol.add_argument("--tolerance", type=float, default=0.0, help="absolute tolerance for every metric")
    tol.add_argument("--tolerances", type=Path, help="YAML/JSON mapping 'task/metric' -> absolute tolerance")
    ck.add_argument("--allow-missing", action="store_true",
                    help="pass although some baseline values have no current result (default: exit 3)")
    ck.add_argument("--strict", action="store_true",
                    help="also fail (exit 3) when a value's seed count differs from the baseline's")

    cv = sub.add_parser("convert", help="official SimMIM / mmpretrain / timm checkpoint -> canonical format")
    cv.add_argument("--from", dest="source", required=True, choices=["simmim", "mmpretrain", "timm"])
    cv.add_argument("src", type=Path)
    cv.add_argument("dst", type=Path)
    cv.add_argument("--arch", help="timm model name (needed for timm sources; overrides inference otherwise)")
    cv.add_argument("--img-size", type=int)
    cv.add_argument("--window-size", type=int, help="Swin: resize relative-position tables to this window")
    cv.add_argument("--allow-partial", action="store_true")

    ini = sub.add_parser("init", help="write a randomly initialised canonical checkpoint (the 'random' baseline)")
    ini.add_argument("--arch", required=True, help="timm model name, e.g. vit_tiny_patch16_224")
    ini.add_argument("--set", dest="kwargs", type=_kv, action="append", default=[],
                     help="timm create_model override KEY=VALUE (repeatable), e.g. --set img_size=32")
    ini.add_argument("--seed", type=int, default=0)
    ini.add_argument("--out", type=Path, required=True)

    # Listed for --help only: main() hands everything after `pretrain` to pretrain.train untouched.
    sub.add_parser("pretrain", add_help=False,
                   help="SimMIM pre-training (the options of `python -m pretrain.train`; see `benchmark pretrain -h`)")

    info = sub.add_parser("inspect", help="print a canonical checkpoint's meta and coverage")
    info.add_argument("ckpt", type=Path)

    sk = sub.add_parser("score-keypoints",
                        help="score a COCO-format keypoint results JSON with the suite's metric code")
    sk.add_argument("--ann", type=Path, required=True, help="ground-truth JSON (COCO person_keypoints / CrowdPose)")
    sk.add_argument("--results", type=Path, required=True, help="list of {image_id, category_id, keypoints, score}")
    sk.add_argument("--kind", choices=["coco", "crowdpose"], default="coco")

    st = sub.add_parser("score-tracking", help="score any tracker's raw results on GOT-10k val or LaSOT test with "
                                               "the official metric definitions")
    st.add_argument("--dataset", choices=["got10k", "lasot"], required=True)
    st.add_argument("--data-root", type=Path, required=True,
                    help="the dataset folder (or the folder holding got10k/ or lasot/)")
    st.add_argument("--results", type=Path, required=True,
                    help="<seq>/<seq>_001.txt (got10k toolkit; _002... pooled) or <seq>.txt (pytracking / LaSOT)")
    st.add_argument("--split", choices=["val", "test"], help="GOT-10k: val (default; test is server-only)")
    st.add_argument("--json", action="store_true", help="print one JSON object")

    an = sub.add_parser("analyze", help="attention distance / entropy / head diversity, layer CKA and AvgDist "
                                         "of checkpoints: CSVs, plots and report.md")
    an.add_argument("--ckpt", dest="ckpts", type=Path, action="append", required=True, metavar="CKPT",
                    help="canonical checkpoint of a ViT or Swin (repeatable; the first two are also compared by CKA)")
    an.add_argument("--name", dest="names", action="append", metavar="NAME",
                    help="label per --ckpt, in order (default: file name)")
    src = an.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="folder of .jpg/.png images (recursive, sorted; first --num-images)")
    src.add_argument("--data", choices=["mini"], help="mini: real Fashion-MNIST test images, class-balanced")
    an.add_argument("--num-images", type=int, default=128, help="images to analyse (default 128, as the ViT paper)")
    an.add_argument("--batch-size", type=int, default=16)
    an.add_argument("--device", default="cpu", help="cpu | cuda")
    an.add_argument("--no-avgdist", dest="avgdist", action="store_false", help="skip the AvgDist grid")
    an.add_argument("--out", type=Path, required=True, help="folder for the CSVs, PNGs and report.md")

    ra = sub.add_parser("reproduce-analysis", help="the paper's MIM-vs-supervised analyses at CPU scale: a tiny ViT "
                                                    "trained with SimMIM and supervised, analysed, findings checked")
    ra.add_argument("--mini", action="store_true", required=True, help="the CPU-sized reproduction (the only one)")
    ra.add_argument("--iters", type=int, default=1000, help="training iterations of each model (default 1000)")
    ra.add_argument("--num-images", type=int, default=128, help="held-out images analysed (default 128)")
    ra.add_argument("--out", type=Path, default=Path("results/analysis_mini"))

    nyu = sub.add_parser("convert-nyu",
                         help="BTS-layout NYUv2 (split file + sync/ or official_splits/) -> mmseg layout")
    nyu.add_argument("--split-file", type=Path, required=True, help="e.g. nyudepthv2_train_files_with_gt.txt")
    nyu.add_argument("--data-path", type=Path, required=True, help="folder the split file's paths are relative to")
    nyu.add_argument("--split", choices=["train", "test"], required=True)
    nyu.add_argument("--out", type=Path, required=True, help="the nyu/ folder to write (images/, annotations/)")
    nyu.add_argument("--mode", choices=["symlink", "hardlink", "copy"], default="symlink")
    return p


def cmd_list(args) -> int:
    from . import data, registry

    specs = registry.load_specs()
    suites = registry.suites(specs)
    if args.what == "suites":
        print(f"{'suite':<10} {'tasks':>5} {'implemented':>11}  members")
        for name, members in suites.items():
            done = sum(specs[m].implemented for m in members)
            print(f"{name:<10} {len(members):>5} {done:>11}  {', '.join(members)}")
        return 0
    print(f"{'task':<20} {'suite':<10} {'status':<16} {'data':<8} {'dataset':<28} metrics")
    for spec in sorted(specs.values(), key=lambda s: (list(suites).index(s.suite), s.order)):
        try:
            root = data.real_root(spec, args.data_root)
            present = "present" if all((root / p).exists() for p in spec.dataset.get("layout", [])) else "missing"
        except BenchmarkError:
            present = "missing"
        status = "implemented" if spec.implemented else "not implemented"
        metrics = " ".join(f"{m.name}{m.arrow}" for m in spec.metrics)
        print(f"{spec.name:<20} {spec.suite:<10} {status:<16} {present:<8} "
              f"{spec.dataset.get('name', '')[:28]:<28} {metrics}")
    return 0


def cmd_params(args) -> int:
    """Every parameter ``--set`` accepts for a task, with its default and each preset's resolved value."""
    from tasks.base import REQUIRED

    from . import registry

    spec = registry.get_task(args.task)
    cls = registry.load_adapter(spec)
    presets = [args.preset] if args.preset else list(spec.presets)
    resolved = {name: cls.resolve_params(spec, name) for name in presets}
    declared: dict = {}
    for name in presets:  # a preset may switch what the adapter reads (the semantic tasks' protocol)
        declared.update(cls.declared_params(spec.preset(name)))
    width = max(len(k) for k in declared)
    print(f"task {spec.name} ({cls.__module__}:{cls.__name__}); `benchmark run --set KEY=VALUE` overrides any of "
          f"these")
    print(f"{'parameter':<{width}}  {'type':<6}  {'default':<14}  " + "  ".join(f"{p:<14}" for p in presets)
          + "  meaning")

    def show(value) -> str:
        text = "null" if value is None else str(value).replace(" ", "")
        return text if len(text) <= 14 else text[:13] + "…"

    for key, param in sorted(declared.items()):
        default = "(required)" if param.default is REQUIRED else show(param.default)
        cells = "  ".join(f"{show(resolved[p][key]) if key in resolved[p] else '-':<14}" for p in presets)
        kind = param.type.__name__ + ("?" if param.nullable else "")
        print(f"{key:<{width}}  {kind:<6}  {default:<14}  {cells}  {param.help}")
    return 0


def cmd_run(args) -> int:
    from . import registry

    specs = registry.resolve(tasks=args.tasks, suite=args.suite)
    for spec in specs:  # bad --preset / --set values exit 2 before torch is even imported
        if spec.implemented:
            registry.resolve_params(spec, args.preset, dict(args.overrides))
    if args.nproc < 1:
        raise BenchmarkError(f"--nproc must be >= 1, got {args.nproc}", "e.g. --nproc 8 on an 8-GPU node")
    if args.jobs < 1:
        raise BenchmarkError(f"--jobs must be >= 1, got {args.jobs}", "e.g. --jobs 2 on a 2-core CPU")
    if args.jobs > 1 and args.launcher != "none":
        raise BenchmarkError(f"--jobs runs tasks side by side on this machine, not with --launcher {args.launcher}",
                             "on Slurm, --launcher submitit --max-parallel N sets how many jobs run at once")
    slurm_opts = _slurm_options(args)
    from . import runner

    opts = runner.RunOptions(ckpt=args.ckpt, tasks=specs, seeds=args.seeds or None, preset=args.preset,
                             subset=args.subset, data_root=args.data_root, mini=args.data == "mini",
                             work_dir=args.work_dir, db=args.db, force=args.force, device=args.device,
                             label=args.name, allow_partial=args.allow_partial, explicit_tasks=bool(args.tasks),
                             debug=args.debug, overrides=dict(args.overrides), nproc=args.nproc,
                             launcher=args.launcher, slurm=slurm_opts, vis_backend=args.vis_backend,
                             jobs=args.jobs)
    outcomes = runner.run(opts)
    failed = [o for o in outcomes if o.status == "failed"]
    ok = sum(o.status == "ok" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    print(f"done: {ok} ok, {skipped} skipped, {len(failed)} failed; results in {args.db}")
    for o in failed:
        print(f"failed: {o.task} seed {o.seed}: {o.detail}")
    return 1 if failed else 0


def _slurm_options(args):
    """The Slurm job options, or None; a Slurm option without --launcher submitit is refused."""
    given = [f"--{name.replace('_', '-')}" for name, default in
             (("partition", None), ("nodes", 1), ("gpus_per_task", 0), ("cpus_per_task", None), ("mem", None),
              ("timeout_min", 24 * 60), ("slurm_opts", []), ("max_parallel", 256))
             if getattr(args, name) != default]
    if args.launcher != "submitit":
        if given:
            raise BenchmarkError(f"{', '.join(given)} only apply to Slurm jobs", "add --launcher submitit")
        return None
    for name in ("nodes", "max_parallel", "timeout_min"):
        if getattr(args, name) < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}",
                                 "pass a positive number")
    from .slurm import SlurmOptions

    return SlurmOptions(partition=args.partition, nodes=args.nodes, gpus_per_task=args.gpus_per_task,
                        cpus_per_task=args.cpus_per_task, mem=args.mem, timeout_min=args.timeout_min,
                        slurm_opts=dict(args.slurm_opts), max_parallel=args.max_parallel,
                        poll_s=float(os.environ.get("MIMBENCH_SLURM_POLL_S", "5")))


def cmd_plan(args) -> int:
    import contextlib

    from . import plan, registry

    specs = [s for s in registry.resolve(tasks=args.tasks, suite=args.suite) if s.implemented]
    with contextlib.redirect_stdout(sys.stderr):  # the libraries' chatter (pycocotools) stays off the plan / JSON
        plans = plan.plan(specs, args.ckpt, args.preset, dict(args.overrides), nproc=args.nproc, gpu=args.gpu,
                          data_root=args.data_root, flops=args.flops, config_out=args.config_out,
                          work_dir=args.work_dir)
    print(plan.to_json(plans) if args.json else plan.render(plans))
    return 0


def cmd_leaderboard(args) -> int:
    from . import leaderboard, registry
    from .reference import load_reference
    from .store import ResultStore

    if args.analysis and args.format != "html":
        raise BenchmarkError("--analysis applies to --format html only", "add --format html or leave --analysis out")
    _require_db(args.db)
    specs = registry.load_specs()
    reference = load_reference(args.reference) if args.reference else None
    store = ResultStore(args.db)
    if args.format == "html":
        from .site import write_site

        print(write_site(store.results(), store.runs(), specs, args.out, reference=reference, suite=args.suite,
                         analysis=args.analysis))
        return 0
    table = leaderboard.build(store.results(), specs, suite=args.suite, reference=reference)
    (leaderboard.to_csv if args.format == "csv" else leaderboard.to_markdown)(table, args.out)
    print(f"wrote {args.out} ({len(table)} rows)")
    return 0


def cmd_check(args) -> int:
    import json

    import yaml

    from . import check, leaderboard, registry
    from .store import ResultStore

    _require_db(args.db)
    tolerances = None
    if args.tolerances:
        if not args.tolerances.exists():
            raise BenchmarkError(f"tolerances file not found: {args.tolerances}", "check the path")
        text = args.tolerances.read_text()
        tolerances = json.loads(text) if args.tolerances.suffix == ".json" else yaml.safe_load(text)
    specs = registry.load_specs()
    current = leaderboard.build(ResultStore(args.db).results(), specs)
    table, regressed = check.compare(args.baseline, current, specs, tolerance=args.tolerance,
                                     tolerances=tolerances)
    print(table.to_string(index=False))
    code, line = check.verdict(table, regressed, allow_missing=args.allow_missing, strict=args.strict)
    print(line)
    return code


def cmd_convert(args) -> int:
    from . import convert

    cov = convert.convert(args.src, args.dst, args.source, arch=args.arch, img_size=args.img_size,
                          window_size=args.window_size, allow_partial=args.allow_partial)
    print(f"wrote {args.dst}: {cov}")
    return 0


def cmd_init(args) -> int:
    from . import checkpoint

    sd, meta = checkpoint.create_random(args.arch, dict(args.kwargs), seed=args.seed)
    checkpoint.save_canonical(args.out, sd, meta)
    print(f"wrote {args.out}: random-init {meta['arch']} {meta['kwargs']} (seed {args.seed})")
    return 0


def cmd_inspect(args) -> int:
    from . import checkpoint

    ckpt = checkpoint.load_canonical(args.ckpt)
    cov = checkpoint.coverage_of(checkpoint.build_model(ckpt.meta), ckpt.state_dict)
    for k, v in ckpt.meta.items():
        print(f"{k}: {v}")
    print(cov)
    return 0 if cov.complete else 1


def cmd_score_keypoints(args) -> int:
    from tasks.pose.keypoint_eval import evaluate_keypoints

    metrics = evaluate_keypoints(args.ann, args.results, kind=args.kind)
    for k, v in metrics.items():
        print(f"{k}: {v:.2f}")
    return 0


def cmd_score_tracking(args) -> int:
    import json

    from tasks.tracking.score import score_results

    from . import data, registry

    root = data.real_root(registry.get_task(args.dataset), args.data_root)
    scores = score_results(args.dataset, root, args.results, args.split)
    if args.json:
        print(json.dumps(scores))
    else:
        for k, v in scores.items():
            print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
    return 0


def cmd_convert_nyu(args) -> int:
    from tasks.depth.bts import convert_bts_nyu

    n = convert_bts_nyu(args.split_file, args.data_path, args.out, args.split, mode=args.mode)
    print(f"wrote {n} {args.split} image/depth pairs under {args.out} (mmseg NYUDataset layout)")
    return 0


def cmd_analyze(args) -> int:
    from .analysis.report import analyze

    report = analyze(args.ckpts, args.out, images=args.images, mini=args.data == "mini", num_images=args.num_images,
                     batch_size=args.batch_size, device=args.device, names=args.names, avgdist=args.avgdist)
    print(report)
    return 0


def cmd_reproduce_analysis(args) -> int:
    from .analysis.reproduce import reproduce_mini

    if args.iters < 1:
        raise BenchmarkError(f"--iters must be >= 1, got {args.iters}", "e.g. --iters 1000")
    print(reproduce_mini(args.out, iters=args.iters, num_images=args.num_images))
    return 0


def cmd_collect(args) -> int:
    from .collect import collect

    found = collect(args.work_dir, args.db)
    for c in found:
        if c.status != "present":
            print(f"{c.status}: {c.path}" + (f" ({c.detail})" if c.detail else ""))
    counts = {s: sum(c.status == s for c in found) for s in ("stored", "present", "skipped")}
    print(f"collected {args.work_dir}: {counts['stored']} stored, {counts['present']} already in {args.db}, "
          f"{counts['skipped']} skipped")
    return 0


def _require_db(path: Path) -> None:
    if not Path(path).exists():
        raise BenchmarkError(f"results DB not found: {path}", "run `benchmark run` first or pass --db FILE")


COMMANDS = {"list": cmd_list, "params": cmd_params, "run": cmd_run, "collect": cmd_collect,
            "leaderboard": cmd_leaderboard, "plan": cmd_plan, "check": cmd_check,
            "convert": cmd_convert, "init": cmd_init, "inspect": cmd_inspect,
            "score-keypoints": cmd_score_keypoints, "score-tracking": cmd_score_tracking,
            "convert-nyu": cmd_convert_nyu, "analyze": cmd_analyze,
            "reproduce-analysis": cmd_reproduce_analysis}


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = argv[:1] == ["--debug"]
    if argv[debug:debug + 1] == ["pretrain"]:
        from pretrain import train

        return train.main(argv[debug + 1:] + (["--debug"] if debug else []))
    args = build_parser().parse_args(argv)
    # A killed runner (SIGTERM from a scheduler or `kill`) stops its worker and keeps finished results.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except BenchmarkError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished results are saved; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
