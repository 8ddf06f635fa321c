"""Pre-training data: image folders (ImageNet layout or flat), the real Fashion-MNIST, and one-line data errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.errors import DataError
from pretrain.data import FASHION_MNIST_ROOT, SimMIMFashionMNIST, SimMIMImageFolder, denormalize
from pretrain.train import main

FMNIST = Path(FASHION_MNIST_ROOT) / "train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed (make setup)")


def write_images(root: Path, n: int, size=(48, 40), classes=("a", "b"), flat=False) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        folder = root if flat else root / classes[i % len(classes)]
        folder.mkdir(parents=True, exist_ok=True)
        p = folder / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


@pytest.mark.parametrize("flat", [False, True])
def test_image_folder_layouts(tmp_path, flat):
    write_images(tmp_path, 6, flat=flat)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = SimMIMImageFolder(tmp_path, img_size=32)
    assert len(ds) == 6
    x = ds[0]["inputs"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() < -0.5 and x.max() > 0.5  # ImageNet-normalized
    img = denormalize(x[None])
    assert img.min() >= 0 and img.max() <= 1
    # augmentation is random: two draws of the same image differ; augment=False is deterministic
    assert not torch.equal(ds[0]["inputs"], ds[0]["inputs"])
    det = SimMIMImageFolder(tmp_path, img_size=32, augment=False)
    assert torch.equal(det[1]["inputs"], det[1]["inputs"])


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    Image.fromarray(np.full((40, 40), 128, np.uint8), mode="L").save(tmp_path / "gray.png")
    Image.fromarray(np.full((40, 40, 4), 200, np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    ds = SimMIMImageFolder(tmp_path, img_size=32)
    assert all(ds[i]["inputs"].shape == (3, 32, 32) for i in range(2))


def test_empty_and_missing_folder(tmp_path):
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    (tmp_path / "empty" / "class_a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"empty holds no images \(1 other files"):
        SimMIMImageFolder(tmp_path / "empty", img_size=32)
    with pytest.raises(DataError, match="image folder not found"):
        SimMIMImageFolder(tmp_path / "nope", img_size=32)


def test_unreadable_image_is_named(tmp_path):
    write_images(tmp_path, 3)
    bad = tmp_path / "a" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match="1 unreadable image.*broken.jpg"):
        SimMIMImageFolder(tmp_path, img_size=32)
    # without the up-front check the file is named when it is loaded
    ds = SimMIMImageFolder(tmp_path, img_size=32, verify="none")
    idx = ds.files.index(str(bad))
    with pytest.raises(DataError, match="cannot decode image .*broken.jpg"):
        ds[idx]


def test_small_images_are_named_with_min_size(tmp_path):
    write_images(tmp_path, 2, size=(64, 64))
    small = tmp_path / "a" / "tiny.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(small)
    with pytest.raises(DataError, match=r"1 image\(s\) .* smaller than the 32px crop, e.g. .*tiny.png is 30×20; "
                                        r"the minimum is 32px"):
        SimMIMImageFolder(tmp_path, img_size=32)
    ds = SimMIMImageFolder(tmp_path, img_size=32, small_images="upsample")
    assert ds[ds.files.index(str(small))]["inputs"].shape == (3, 32, 32)


@needs_fmnist
def test_fashion_mnist_real_data():
    ds = SimMIMFashionMNIST(split="test", img_size=32, limit=16)
    assert len(ds) == 16
    x = ds[0]["inputs"]
    assert x.shape == (3, 32, 32)
    img = denormalize(x[None])[0]
    assert torch.allclose(img[0], img[1], atol=1e-5) and torch.allclose(img[1], img[2], atol=1e-5)  # gray → RGB
    assert SimMIMFashionMNIST(split="train", limit=8).images.shape == (8, 28, 28)
    with pytest.raises(DataError, match="not found"):
        SimMIMFashionMNIST(root="/nonexistent", split="train")


def test_cli_one_line_errors(tmp_path, capsys):
    assert main(["--config", "no_such_config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config not found: no_such_config") and "simmim_vit_tiny_fmnist" in err
    assert len(err.splitlines()) == 1
    (tmp_path / "imgs").mkdir()
    cfg = tmp_path / "folder_cfg.py"
    cfg.write_text(f"_base_ = ['{Path('pretrain/configs/simmim_vit_tiny_fmnist.py').resolve()}']\n"
                   f"train_dataloader = dict(dataset=dict(_delete_=True, type='SimMIMImageFolder', "
                   f"root='{tmp_path / 'imgs'}', img_size=32))\n")
    rc = main(["--config", str(cfg), "--work-dir", str(tmp_path / "wd")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"error: image folder {tmp_path / 'imgs'} holds no images")


def test_worker_error_is_one_line():
    """A DataError raised in a DataLoader worker comes back wrapped with a traceback; the CLI prints one line."""
    from pretrain.train import one_line

    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\nbenchmark.errors.DataError: cannot decode image "
                        "/d/a.jpg: OSError: broken — remove or replace the file\n")
    assert one_line(wrapped) == "cannot decode image /d/a.jpg: OSError: broken — remove or replace the file"
