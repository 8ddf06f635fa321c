"""`benchmark plan`: the resolved `paper` recipes per backbone family, FLOPs, configs, bad input.

The recipe test builds every trained task's `paper` model and pipelines for a plain ViT and a Swin (tiny ones, so it
takes seconds) and checks the values that decide published numbers against the official recipes the protocol docs
cite (docs/protocols.md, the recipe tables): a drifted `paper` preset fails here.
"""

from __future__ import annotations

import json

import pytest
from mmengine.config import Config

from tests.conftest import make_ckpt, run_cli

# patch 16 as ViT-B/16, so the paper's input sizes stay cheap on a tiny trunk
TINY_VIT16 = ("vit_tiny_patch16_224", {"depth": 2, "embed_dim": 64, "num_heads": 2})
TINY_SWIN = ("swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 2, 2, 4)})

# (task, family) -> official values (docs/protocols.md recipe tables, each row citing its source file)
OFFICIAL = {
    ("coco_pose", "plain"): dict(batch_size=512, lr=5e-4, weight_decay=0.1, layer_decay=0.75, drop_path=0.3,
                                 clip_grad=1.0, codec="udp", epochs=210.0, warmup_iters=500,
                                 no_decay_rule="1d"),
    ("coco_pose", "swin"): dict(batch_size=256, lr=5e-4, weight_decay=0.0, layer_decay=1.0, drop_path=0.3,
                                codec="msra", epochs=210.0),
    ("crowdpose", "plain"): dict(codec="msra", half_body_min_keypoints=7),
    ("crowdpose", "swin"): dict(codec="msra", half_body_min_keypoints=7, layer_decay=1.0),
    ("nyu_depth", "swin"): dict(crop_size=[480, 480], epochs=25.0, batch_size=24, lr=5e-4, min_lr=3e-5,
                                layer_decay=0.9, drop_path=0.3, weight_decay=0.05, test_mode="slide",
                                swin_window=[30, 30, 30, 15], swin_merge_own_layer=True, output_norm="fresh"),
    ("kitti_depth", "swin"): dict(crop_size=[352, 352], epochs=25.0, batch_size=24, test_mode="slide",
                                  swin_window=[22, 22, 22, 11], swin_merge_own_layer=True, output_norm="fresh"),
    ("got10k", "plain"): dict(template_size=128, search_size=256, lr=4e-4, clip_grad=0.1, epochs=100.0,
                              ce_layers=[3, 6, 9], ce_keep_ratio=0.7, ce_start_frac=0.2, ce_warm_frac=0.5,
                              no_decay_rule="none"),
    ("got10k", "swin"): dict(template_size=112, search_size=224, lr=5e-4, clip_grad=0.1, epochs=300.0,
                             frame_sampling="interval", color_jitter=0.4, no_decay_rule="none"),
    ("lasot", "plain"): dict(dataset_weights=[1, 1], epochs=300.0, ce_start_frac=20 / 300, ce_warm_frac=80 / 300),
    ("coco_det", "plain"): dict(batch_size=64, lr=1e-4, weight_decay=0.1, layer_decay=0.7, iters=184_375,
                                warmup_iters=250, drop_path=0.1, augment="lsj", head="vitdet", neck="simple",
                                attention="vitdet", no_decay_rule="norms"),
    ("coco_det", "swin"): dict(batch_size=16, lr=1e-4, weight_decay=0.05, layer_decay=1.0, epochs=36.0,
                               milestones_epochs=[27, 33], warmup_iters=1000, drop_path=0.3,
                               augment="multiscale_crop", no_decay_rule="norms"),
    ("ade20k_seg", "plain"): dict(batch_size=16, iters=160_000, layer_decay=0.65, vit_neck="feature2pyramid",
                                  no_decay_rule="1d"),
    ("ade20k_seg", "swin"): dict(batch_size=16, iters=160_000, lr=6e-5, weight_decay=0.01, layer_decay=1.0,
                                 drop_path=0.3, no_decay_rule="norms"),
    ("ade20k_m2f", "swin"): dict(lr=1e-4, weight_decay=0.05, backbone_lr_mult=0.1, clip_grad=0.01, iters=160_000,
                                  no_decay_rule="norms"),
    ("k12_flowers102", "plain"): dict(iters=20_000, batch_size=256, lr=6.25e-4, no_decay_rule="1d"),
}
TASKS = sorted({t for t, _ in OFFICIAL})


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan_ckpt")
    return {"plain": make_ckpt(folder / "vit16.pth", TINY_VIT16), "swin": make_ckpt(folder / "swin.pth", TINY_SWIN)}


@pytest.fixture(scope="module")
def plan_work(tmp_path_factory):
    """One work dir for every plan of this module: the mini data are generated once."""
    return tmp_path_factory.mktemp("plan_work")


@pytest.fixture(scope="module")
def paper_plans(ckpts, plan_work, tmp_path_factory):
    """`benchmark plan --preset paper --no-flops` for every trained task and both families: models and pipelines
    built, nothing run."""
    out = {}
    for fam, ckpt in ckpts.items():
        cfg = tmp_path_factory.mktemp(f"cfg_{fam}")
        r = run_cli("plan", "--tasks", ",".join(TASKS), "--ckpt", ckpt, "--preset", "paper", "--no-flops", "--json",
                    "--config-out", cfg, "--work-dir", plan_work, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        out[fam] = ({p["task"]: p for p in json.loads(r.stdout)}, cfg)
    return out


@pytest.mark.parametrize("task,fam", sorted(OFFICIAL))
def test_paper_recipe_is_the_official_one(paper_plans, task, fam):
    plans, cfg = paper_plans[fam]
    tp = plans[task]
    assert tp["family"] == fam and tp["trained"]
    got = {k: v["value"] for k, v in tp["recipe"].items()}
    for key, want in OFFICIAL[(task, fam)].items():
        assert got[key] == pytest.approx(want), f"{task} ({fam}): {key} = {got[key]}, official {want}"
    assert tp["derived"]["parameters_M"]["value"] > 0  # the model was built
    config = Config.fromfile(str(cfg / f"{task}.py"))  # a loadable mmengine config
    assert config.model and config.optim_wrapper.optimizer.type == "AdamW"
    assert config.train_cfg.max_iters == tp["derived"]["iterations"]["value"]


def test_family_values_name_their_source(paper_plans):
    plans, _ = paper_plans["swin"]
    origin = plans["coco_det"]["recipe"]["batch_size"]["origin"]
    assert origin.startswith("family recipe:") and "mask-rcnn_swin" in origin
    assert plans["coco_pose"]["recipe"]["layer_decay"]["origin"].startswith("family recipe:")
    vit, _ = paper_plans["plain"]
    assert "ViTDet" in vit["coco_det"]["recipe"]["iters"]["origin"]


def test_plan_measures_flops_and_cost(ckpts, plan_work):
    r = run_cli("plan", "--tasks", "coco_pose,nyu_depth", "--ckpt", ckpts["plain"], "--preset", "ci", "--nproc", "2",
                "--gpu", "A100", "--work-dir", plan_work, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout
    assert "== coco_pose (preset ci, plain backbone)" in text and "== nyu_depth" in text
    assert "GFLOPs per training sample" in text and "GPU-hours on A100" in text
    assert "assumed 35% of peak" in text or "measured" in text
    r = run_cli("plan", "--tasks", "coco_pose", "--ckpt", ckpts["plain"], "--preset", "ci", "--json", "--work-dir",
                plan_work, timeout=600)
    c = json.loads(r.stdout)[0]["compute"]
    # training = forward + backward: more than twice one evaluation forward (the flip test doubles evaluation)
    assert c["train_gflops_per_sample"] > 0 and c["eval_gflops_per_item"] > 0
    assert c["params_M"] > 0 and c["gpu_hours"] >= 0 and c["checkpoint_gb"] > 0


@pytest.mark.parametrize("args,message", [
    (["--ckpt", "missing.pth", "--tasks", "coco_pose"], "does not exist"),
    (["--tasks", "coco_pose", "--gpu", "TPU9"], "unknown GPU 'TPU9'"),
    (["--tasks", "nyu_depth", "--preset", "linear"], "has no preset 'linear'"),
    (["--tasks", "no_such_task"], "unknown task"),
])
def test_plan_bad_input(ckpts, args, message):
    args = (["--ckpt", str(ckpts["plain"])] if "--ckpt" not in args else []) + args
    r = run_cli("plan", *args, "--no-flops")
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_device_check_refuses_without_gpu():
    import subprocess

    from tests.conftest import REPO

    r = subprocess.run(["bash", str(REPO / "scripts/device_check.sh")], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2
    assert "needs a CUDA GPU" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_eva_detection_recipe_takes_global_attention():
    """A recipe keyed by the finer variant wins: EVA has no ViTDet window-attention port."""
    from tasks.detection.adapter import FAMILY_RECIPES, COCODet

    fam, recipe = COCODet.family_recipe("eva02_base_patch14_224.mim_in22k")
    assert fam == "plain" and recipe.values["attention"] == "global" and recipe.values["augment"] == "lsj"
    assert COCODet.family_recipe("vit_base_patch16_224")[1] is FAMILY_RECIPES["plain"]
