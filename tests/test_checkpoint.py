import pickle

import pytest
import torch

from benchmark import checkpoint
from benchmark.errors import CheckpointError
from tests.conftest import TINY_SWIN, TINY_VIT, make_ckpt


@pytest.mark.parametrize("arch", [TINY_VIT, TINY_SWIN], ids=["vit", "swin"])
def test_round_trip_is_exact_and_complete(tmp_path, arch):
    path = make_ckpt(tmp_path / "m.pth", arch, seed=3)
    model = checkpoint.load_backbone(path)
    assert model.coverage.complete and model.coverage.fraction == 1.0
    sd = checkpoint.load_canonical(path).state_dict
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert model.mim_meta["img_size"] == arch[1]["img_size"]
    size = arch[1]["img_size"]
    assert model(torch.randn(2, 3, size, size)).shape[0] == 2


def test_random_init_differs_by_seed(tmp_path):
    a = checkpoint.load_canonical(make_ckpt(tmp_path / "a.pth", seed=0)).state_dict
    b = checkpoint.load_canonical(make_ckpt(tmp_path / "b.pth", seed=1)).state_dict
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], b["blocks.0.attn.qkv.weight"])


def test_partial_checkpoint_is_an_error_unless_allowed(tmp_path, tiny_vit_ckpt):
    ckpt = checkpoint.load_canonical(tiny_vit_ckpt)
    sd = {k: v for k, v in ckpt.state_dict.items() if not k.startswith("blocks.1.")}
    path = checkpoint.save_canonical(tmp_path / "partial.pth", sd, ckpt.meta)
    with pytest.raises(CheckpointError, match=r"does not fill the backbone: coverage \d+/30 .*missing \d+: blocks.1"):
        checkpoint.load_backbone(path)
    model = checkpoint.load_backbone(path, allow_partial=True)
    assert not model.coverage.complete and 0 < model.coverage.fraction < 1


def test_shape_mismatch_is_reported(tmp_path, tiny_vit_ckpt):
    ckpt = checkpoint.load_canonical(tiny_vit_ckpt)
    sd = dict(ckpt.state_dict, **{"pos_embed": torch.zeros(1, 5, 64)})
    path = checkpoint.save_canonical(tmp_path / "bad.pth", sd, ckpt.meta)
    with pytest.raises(CheckpointError, match="shape mismatch 1: pos_embed"):
        checkpoint.load_backbone(path)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("content, message", [
    (None, "checkpoint not found"),
    (b"this is not a checkpoint at all", "not a readable PyTorch checkpoint"),
    ("evil", "pickles Python objects that are not tensors or plain containers .*builtins.print"),
    ({"model": {"w": torch.zeros(1)}}, "not in the suite's canonical backbone format"),
    ("unknown_arch", "unknown backbone arch 'vit_tiny_patch16_22'.*did you mean vit_tiny_patch16_224"),
])
def test_bad_checkpoints_give_one_clear_error(tmp_path, content, message, tiny_vit_ckpt):
    path = tmp_path / "x.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "evil":
        torch.save({"state_dict": {}, "meta": Evil()}, path)
    elif content == "unknown_arch":
        ckpt = checkpoint.load_canonical(tiny_vit_ckpt)
        torch.save({"state_dict": ckpt.state_dict, "meta": dict(ckpt.meta, arch="vit_tiny_patch16_22")}, path)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load_backbone(path)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        checkpoint.read_checkpoint(tmp_path)


def test_save_is_atomic(tmp_path, monkeypatch, tiny_vit_ckpt):
    ckpt = checkpoint.load_canonical(tiny_vit_ckpt)
    target = tmp_path / "out.pth"

    def broken_save(*a, **k):
        raise pickle.PicklingError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(pickle.PicklingError):
        checkpoint.save_canonical(target, ckpt.state_dict, ckpt.meta)
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temp file
