"""K augmented views of every training image, encoded once (``data.feature_cache.train_views``).

For methods whose image features do not depend on learned state (``touches_image_tower=False``),
the features of an augmented training image are a pure function of (image, augmentation). Like
Tip-Adapter's ``augment_epoch``, the training set is augmented K times up front, each view encoded
once by the frozen backbone, and training reads (feature, label) batches instead of running the
image encoder at every step.

* View k of image i is augmented with the seed ``view_seed(seed, k, i)``: reproducible, and
  independent of batch size, worker count and device.
* In epoch e, image i is read in view ``(e + offset_i) % K`` with ``offset_i`` drawn once from the
  run seed, so every K consecutive epochs show each image in each of its K views exactly once.
* Batch composition (the order of images) is that of ``EpochSeededSampler``, as in the image path.

Files are ``<key>.safetensors`` holding one (K, N, D) float32 tensor, written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from prompt_learning.data.feature_cache import feature_key, store_in_cache
from prompt_learning.data.image_dataset import EpochSeededSampler, ImageDataset
from prompt_learning.data.types import Datum, ImageLoader
from prompt_learning.progress import Progress

log = logging.getLogger(__name__)


def view_seed(seed: int, view: int, index: int) -> int:
    """The augmentation seed of view ``view`` of training image ``index`` in a run with ``seed``."""
    return (seed * 1_000_037 + view) * 1_000_039 + index


def view_offsets(n: int, views: int, seed: int) -> Tensor:
    """(N,) per-image view offsets in [0, K), drawn from the run seed only."""
    return torch.randint(views, (n,), generator=torch.Generator().manual_seed(seed * 1_000_081 + views))


@torch.no_grad()
def encode_views(encode: Callable[[Tensor], Tensor], items: Sequence[Datum], load_image: ImageLoader,
                 transform: Callable, views: int, seed: int, device: torch.device, batch_size: int = 100,
                 num_workers: int = 0) -> Tensor:
    """(K, N, D) float32 ``encode(transform(image))`` of every view of every item, on the CPU."""
    dataset = ImageDataset(items, load_image, transform)
    out = []
    started = time.time()
    with Progress(f"Encoding {views} augmented views of {len(items)} training images", views * len(items),
                  "img") as progress:
        for k in range(views):
            keys = [(i, view_seed(seed, k, i)) for i in range(len(items))]  # ImageDataset seeds each transform
            loader = DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=num_workers)
            parts = []
            progress.set_postfix(f"view {k + 1}/{views}")
            for images, _ in loader:
                parts.append(encode(images.to(device)).float().cpu())  # (B, D)
                progress.advance(len(images))
            out.append(torch.cat(parts))  # (N, D)
            log.info("Encoded training view %d/%d (%d images, %.1f s)", k + 1, views, len(items),
                     time.time() - started)
        progress.set_postfix("")
    return torch.stack(out)  # (K, N, D)


def cached_train_views(encode: Callable[[Tensor], Tensor], identity: dict | None, items: Sequence[Datum],
                       load_image: ImageLoader, transform: Callable, views: int, seed: int,
                       cache_dir: Path | None, device: torch.device, batch_size: int = 100,
                       num_workers: int = 0) -> tuple[Tensor, Path | None]:
    """(K, N, D) view features and the cache file they were read from or written to.

    ``identity`` or ``cache_dir`` None: computed in memory only (weights that are not a fixed, named
    file must not be cached on disk)."""
    if identity is None or cache_dir is None:
        return encode_views(encode, items, load_image, transform, views, seed, device, batch_size, num_workers), None
    loader_identity = getattr(load_image, "__qualname__", None) or repr(load_image)
    key = feature_key({**identity, "train_views": views, "view_seed": seed}, [d.ref for d in items], transform,
                      loader_identity)
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        log.info("Reading %d cached training views of %d images from %s", views, len(items), path)
        return load_file(path)["features"], path
    features = encode_views(encode, items, load_image, transform, views, seed, device, batch_size, num_workers)
    if not store_in_cache(path, save({"features": features.contiguous()}), "training view cache"):
        return features, None  # an unwritable cache directory: warned once, trained from memory
    log.info("Cached %d training views of %d images in %s", views, len(items), path)
    return features, path


class TrainViewsDataset(Dataset):
    """(feature, label) of image ``index`` in view ``view``; keys are ``(index, view)`` pairs."""

    def __init__(self, features: Tensor, labels: Tensor) -> None:
        self.features = features  # (K, N, D)
        self.labels = labels  # (N,)

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, view = key
        return self.features[view, index], self.labels[index]  # (D,), ()


class TrainViewsSampler(EpochSeededSampler):
    """``EpochSeededSampler``'s order (same batches as the image path), each index paired with the
    view it is read in this epoch instead of an augmentation seed."""

    def __init__(self, n: int, seed: int, views: int, rank: int = 0, world: int = 1) -> None:
        super().__init__(n, seed, rank, world)
        self.views = views
        self.offsets = view_offsets(n, views, seed)  # (N,)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index, _ in super().__iter__():
            yield index, int(self.offsets[index] + self.epoch) % self.views
