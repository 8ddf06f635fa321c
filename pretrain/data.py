"""Pre-training data: any image folder, or the real Fashion-MNIST, with SimMIM's augmentation.

Both datasets are registered in mmengine's ROOT ``DATASETS`` registry and return ``dict(inputs=CHW float tensor)``;
masks are drawn per batch on the model's device (:class:`pretrain.mask.MaskGenerator`), not in the loader.

SimMIM augmentation (microsoft/SimMIM ``SimMIMTransform``): RGB → RandomResizedCrop(size, scale=(0.67, 1),
ratio=(3/4, 4/3)) → RandomHorizontalFlip → ToTensor → Normalize(ImageNet mean/std). Without ``augment`` (figures):
Resize(size) → CenterCrop(size).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from mmengine.registry import DATASETS
from torch.utils.data import Dataset

from benchmark import fashion_mnist
from benchmark.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FASHION_MNIST_ROOT = str(fashion_mnist.DEBIAN_ROOT)


def simmim_transform(img_size: int, augment: bool = True, scale=(0.67, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, pre_resize: bool = False):
    import torchvision.transforms as T

    steps = [T.Lambda(_to_rgb)]
    if pre_resize:
        steps.append(T.Resize((img_size, img_size)))
    if augment:
        steps += [T.RandomResizedCrop(img_size, scale=tuple(scale), ratio=tuple(ratio)), T.RandomHorizontalFlip()]
    else:
        steps += [T.Resize(img_size), T.CenterCrop(img_size)]
    steps += [T.ToTensor(), T.Normalize(mean=mean, std=std)]
    return T.Compose(steps)


def _to_rgb(img):
    return img.convert("RGB") if img.mode != "RGB" else img


def denormalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Normalized (B, 3, H, W) → [0, 1] images."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * s + m).clamp(0, 1)


def _header(path: str) -> tuple[str, tuple[int, int] | None, str]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return path, im.size, ""
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds on junk files
        return path, None, f"{type(exc).__name__}: {str(exc)[:120]}"


@DATASETS.register_module()
class SimMIMImageFolder(Dataset):
    """Every image under ``root`` (ImageNet layout ``root/<class>/<img>`` or flat), labels ignored.

    Args:
        root: the folder.
        img_size: crop size.
        augment: SimMIM augmentation (True) or a deterministic resize + center crop (False, for figures).
        small_images: 'error' (default): an image whose shorter side is below ``img_size`` is an error;
            'upsample': allow it (RandomResizedCrop upsamples, as the official code does silently).
        verify: 'full' reads every file's header at start (unreadable / too small files are found before training;
            with several processes each checks its share); 'none' skips this (errors then come at load time).
        limit: use the first N files (sorted) only; 0 = all.
    """

    def __init__(self, root: str, img_size: int = 224, augment: bool = True, scale: Sequence[float] = (0.67, 1.0),
                 ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0), small_images: str = "error", verify: str = "full",
                 limit: int = 0, extensions: Sequence[str] = IMAGE_EXTENSIONS, num_threads: int = 8):
        self.root = Path(os.path.expanduser(str(root)))
        self.img_size = int(img_size)
        if small_images not in ("error", "upsample"):
            raise DataError(f"small_images must be 'error' or 'upsample', got {small_images!r}",
                            "fix train_dataloader.dataset.small_images")
        self.small_images = small_images
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}",
                            "set train_dataloader.dataset.root (or --data) to a folder of images")
        exts = tuple(e.lower() for e in extensions)
        files, others = [], 0
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(exts):
                    files.append(os.path.join(dirpath, f))
                elif not f.startswith("."):
                    others += 1
        if not files:
            extra = f" ({others} other files, none with an image extension)" if others else ""
            raise DataError(f"image folder {self.root} holds no images{extra}",
                            f"put images ({', '.join(exts[:4])} …) in it, flat or in class sub-folders")
        if limit:
            files = files[:int(limit)]
        self.files = files
        self.transform = simmim_transform(self.img_size, augment, scale, ratio)
        if verify == "full":
            self._verify(int(num_threads))
        elif verify != "none":
            raise DataError(f"verify must be 'full' or 'none', got {verify!r}", "fix train_dataloader.dataset.verify")

    def _verify(self, num_threads: int) -> None:
        from mmengine.dist import all_reduce, get_dist_info

        rank, world = get_dist_info()
        mine = self.files[rank::world]
        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            headers = list(pool.map(_header, mine, chunksize=256))
        bad = [(p, err) for p, size, err in headers if size is None]
        small = [(p, size) for p, size, _ in headers if size is not None and min(size) < self.img_size]
        if self.small_images == "upsample":
            small = []
        problems = torch.tensor([len(bad), len(small)], dtype=torch.long)
        if world > 1:
            all_reduce(problems)
        n_bad, n_small = (int(v) for v in problems)
        if n_bad:
            where = f", e.g. {bad[0][0]} ({bad[0][1]})" if bad else " (see the other ranks' logs)"
            raise DataError(f"{n_bad} unreadable image file(s) in {self.root}{where}",
                            "remove or replace them (PIL must open every image)")
        if n_small:
            if small:
                p, (w, h) = small[0]
                which = f", e.g. {p} is {w}×{h}"
            else:
                which = ""
            raise DataError(f"{n_small} image(s) in {self.root} are smaller than the {self.img_size}px crop{which}; "
                            f"the minimum is {self.img_size}px on the shorter side",
                            "use larger images, a smaller img_size, or train_dataloader.dataset.small_images="
                            "'upsample' to let RandomResizedCrop upsample them")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> dict:
        from PIL import Image

        path = self.files[idx]
        try:
            with Image.open(path) as im:
                im.load()
                img = im.convert("RGB") if im.mode != "RGB" else im.copy()
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"cannot decode image {path}: {type(exc).__name__}: {str(exc)[:120]}",
                            "remove or replace the file") from None
        if self.small_images == "error" and min(img.size) < self.img_size:
            raise DataError(f"image {path} is {img.size[0]}×{img.size[1]}, smaller than the {self.img_size}px crop "
                            f"(minimum {self.img_size}px on the shorter side)",
                            "use larger images or small_images='upsample'")
        return dict(inputs=self.transform(img))


@DATASETS.register_module()
class SimMIMFashionMNIST(Dataset):
    """The real Fashion-MNIST (IDX files), grayscale → RGB, resized to ``img_size``, then SimMIM's augmentation.

    Args:
        root: folder with the four IDX ``.gz`` files (Debian ``dataset-fashion-mnist``).
        split: 'train' (60k) or 'test' (10k, used as held-out images for figures).
        limit: first N images only (0 = all).
    """

    def __init__(self, root: str = FASHION_MNIST_ROOT, split: str = "train", img_size: int = 32,
                 augment: bool = True, limit: int = 0, scale: Sequence[float] = (0.67, 1.0),
                 ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0)):
        root_p = Path(root)
        if split not in fashion_mnist.FILES:
            raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}", "fix dataset.split")
        fashion_mnist.require(root_p, (split,))
        images, _ = fashion_mnist.load_split(root_p, split)
        if limit:
            images = images[:int(limit)]
        self.images = np.ascontiguousarray(images)
        self.img_size = int(img_size)
        self.transform = simmim_transform(self.img_size, augment, scale, ratio, pre_resize=True)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> dict:
        from PIL import Image

        return dict(inputs=self.transform(Image.fromarray(self.images[idx])))
