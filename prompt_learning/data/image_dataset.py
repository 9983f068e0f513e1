"""A torch ``Dataset`` over ``Datum`` lists, with per-sample seeded augmentation.

The training sampler yields ``(index, sample_seed)`` pairs; the transform then draws its randomness
from a generator seeded by ``sample_seed``. Augmentations therefore depend only on (run seed, epoch,
position), not on worker count or on whether a run was resumed from a checkpoint.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from prompt_learning.data.types import Datum, ImageLoader
from prompt_learning.errors import DataError, FormatError


class ImageDataset(Dataset):
    def __init__(self, items: Sequence[Datum], load_image: ImageLoader, transform: Callable) -> None:
        self.items = list(items)
        self.load_image = load_image
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def decode(self, index: int):
        """The image of item ``index``; a file that cannot be read is a DataError naming it and its class (one
        whose pixels cannot be converted faithfully: ``formats.image_to_rgb``'s own message)."""
        item = self.items[index]
        try:
            return self.load_image(item.ref)
        except FormatError:
            raise
        except Exception as exc:
            raise DataError(f"Cannot read image {item.ref!r} (class {item.classname!r}): {exc}. "
                            f"Remove or replace the file.") from None

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        index, sample_seed = key if isinstance(key, tuple) else (key, None)
        item = self.items[index]
        image = self.decode(index)
        if sample_seed is None:
            return self.transform(image), item.label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.transform(image), item.label


class MultiViewDataset(ImageDataset):
    """Each item as (1 + V, 3, H, W): the image through ``transform`` (the eval view, first) and V views
    through ``view_transform`` (an augmentation of the decoded image, never of a normalised tensor), seeded
    by (seed, the image's reference), so that the views do not depend on the order or on DDP sharding.
    For test-time adaptation."""

    def __init__(self, items: Sequence[Datum], load_image: ImageLoader, transform: Callable,
                 view_transform: Callable, views: int, seed: int) -> None:
        super().__init__(items, load_image, transform)
        self.view_transform, self.views, self.seed = view_transform, views, seed

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        index = key[0] if isinstance(key, tuple) else key
        item, raw = self.items[index], self.decode(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(str(item.ref).encode()))
            views = [self.view_transform(raw) for _ in range(self.views)]  # V x (3, H, W)
        return torch.stack([self.transform(raw), *views]), item.label  # (1 + V, 3, H, W)


class EpochSeededSampler(Sampler):
    """Shuffles with a permutation drawn from (seed, epoch) and tags each index with a sample seed.

    With ``world > 1`` (DDP) rank r takes positions r, r + world, ... of the permutation, truncated to a
    multiple of ``world``: step k of the ranks together covers exactly the global batch k of a
    single-process run with the same global batch size, with the same augmentation seeds."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = (self.seed * 1_000_003 + self.epoch) * 1_000_033
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(base))
        pairs = [(int(i), base + pos) for pos, i in enumerate(order)]
        return iter(pairs[: len(self) * self.world][self.rank :: self.world])


class InOrderSeededSampler(Sampler):
    """Indices 0..n-1 in order, each tagged with the sample seed ``base + index``: one reproducible augmented
    pass over a set whose rows must line up with another pass's (Tip-Adapter's cache averages passes)."""

    def __init__(self, n: int, base: int) -> None:
        self.n, self.base = n, base

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.base + i) for i in range(self.n)])
