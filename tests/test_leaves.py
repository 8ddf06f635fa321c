"""The small shared modules pretrain/ and tasks/ build on: families, atomic files, distributed helpers, trusted work
dirs, plotting, Fashion-MNIST files and pooled features."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from benchmark import distributed, families, fashion_mnist, files, workdir
from benchmark.errors import CheckpointError


# -- families -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,variant,family", [
    ("vit_base_patch16_224", "vit", "plain"),
    ("deit_tiny_patch16_224", "vit", "plain"),
    ("eva02_tiny_patch14_224", "eva", "plain"),
    ("beit_base_patch16_224", "beit", "beit"),
    ("swin_tiny_patch4_window7_224", "swin", "swin"),
    ("swinv2_tiny_window8_256", "swinv2", "swin"),
])
def test_family_and_variant(arch, variant, family):
    assert families.variant(arch) == variant
    assert families.family(arch) == family
    assert families.FAMILY_OF_VARIANT[variant] == family


def test_family_refuses_what_the_suite_cannot_drive():
    assert families.variant("resnet18") == ""
    with pytest.raises(CheckpointError, match="not supported by MIMBackbone"):
        families.family("resnet18")
    for fn in (families.family, families.variant):
        with pytest.raises(CheckpointError, match="unknown backbone arch 'vit_nonexistent'"):
            fn("vit_nonexistent")


# -- atomic files ---------------------------------------------------------------------------------------------------
def test_atomic_writes_create_folders_and_use_the_umask(tmp_path):
    p = files.write_text_atomic(tmp_path / "a" / "b.txt", "x\r\ny\n")
    assert p.read_bytes() == b"x\r\ny\n"  # line endings kept as given
    files.write_json_atomic(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "c.json").read_text().splitlines()[1] == '  "a": ['
    files.write_bytes_atomic(tmp_path / "d.bin", b"\x00\x01")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "d.bin").stat().st_mode) == 0o666 & ~umask
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a", "c.json", "d.bin"]  # no temp file left


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    target = files.write_text_atomic(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["t.txt"]


# -- distributed ----------------------------------------------------------------------------------------------------
def test_world_size_and_rank_without_a_process_group():
    assert distributed.world_size() == 1 and distributed.rank() == 0


def test_init_cpu_dist_refuses_gpu_backends():
    with pytest.raises(Exception, match="needs GPUs"):
        distributed.init_cpu_dist("pytorch", backend="nccl")


# -- trusted work dirs ----------------------------------------------------------------------------------------------
class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious checkpoint does: run a command while being unpickled
        return os.system, (f"touch {self.marker}",)


def test_own_checkpoints_load_with_an_allow_list_and_a_planted_pickle_never_runs(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import CheckpointLoader

    from benchmark.errors import CheckpointError

    monkeypatch.setattr(workdir, "_OWN_DIRS", [])
    planted = tmp_path / "work" / "iter_20.pth"
    planted.parent.mkdir()
    torch.save({"meta": {}, "state_dict": _Planted(tmp_path / "pwned")}, planted)
    workdir.trust_work_dir(planted.parent)
    with pytest.raises(CheckpointError, match="not a checkpoint this suite wrote.*posix.system"):
        CheckpointLoader.load_checkpoint(str(planted), map_location="cpu")
    assert not (tmp_path / "pwned").exists()


def test_only_files_inside_a_trusted_work_dir_are_unpickled(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import CheckpointLoader

    monkeypatch.setattr(workdir, "_OWN_DIRS", [])
    own, user = tmp_path / "work" / "iter_1.pth", tmp_path / "user.pth"
    own.parent.mkdir()
    for p in (own, user):
        torch.save({"meta": {"when": np.float64(1.5)}}, p)  # a numpy scalar: weights_only refuses it
    workdir.trust_work_dir(own.parent)
    assert workdir.is_trusted(own) and not workdir.is_trusted(user)
    assert CheckpointLoader.load_checkpoint(str(own), map_location="cpu")["meta"]["when"] == 1.5
    with pytest.raises(Exception, match="[Ww]eights"):
        CheckpointLoader.load_checkpoint(str(user), map_location="cpu")
    assert workdir.read_own_checkpoint_meta(own) == {"when": 1.5}


# -- plotting -------------------------------------------------------------------------------------------------------
def test_pyplot_is_agg(tmp_path):
    from benchmark.plotting import pyplot

    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "p.png")
    plt.close(fig)
    assert (tmp_path / "p.png").stat().st_size > 0


# -- Fashion-MNIST files and features -------------------------------------------------------------------------------
def test_idx_round_trip_and_missing_files(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    img_file, lbl_file = fashion_mnist.FILES["test"]
    fashion_mnist.write_idx(tmp_path / img_file, images)
    fashion_mnist.write_idx(tmp_path / lbl_file, labels)
    got, got_labels = fashion_mnist.load_split(tmp_path, "test")
    assert np.array_equal(got, images) and got_labels.tolist() == [3, 7] and got_labels.dtype == np.int64
    fashion_mnist.require(tmp_path, ("test",))
    with pytest.raises(Exception, match="train-images-idx3-ubyte.gz"):
        fashion_mnist.require(tmp_path)
    (tmp_path / img_file).write_bytes(b"junk")
    with pytest.raises(Exception, match="cannot read IDX file"):
        fashion_mnist.load_split(tmp_path, "test")


def test_pool_features_drops_prefix_tokens():
    import timm

    from benchmark.features import eval_transform, pool_features

    m = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=16, num_heads=1,
                          num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = m.forward_features(x)
        assert torch.allclose(pool_features(m, x), tokens[:, 1:].mean(1))
        assert torch.allclose(pool_features(m, x, "token"), m(x))
    assert eval_transform(32).transforms[-1].mean is not None
