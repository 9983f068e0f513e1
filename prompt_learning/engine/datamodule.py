"""PromptDataModule: a protocol's task -> data loaders (train, few-shot val, one test loader per eval set)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from prompt_learning.data.eval_cache import CachedImageDataset, decoded_images, split_preprocess
from prompt_learning.data.image_dataset import EpochSeededSampler, ImageDataset, MultiViewDataset
from prompt_learning.data.train_views import TrainViewsDataset, TrainViewsSampler
from prompt_learning.data.types import ImageLoader
from prompt_learning.methods import PromptMethod
from prompt_learning.protocols import Task


class PromptDataModule(L.LightningDataModule):
    def __init__(self, task: Task, load_image: ImageLoader, train_transform: Callable, eval_transform: Callable,
                 batch_size: int = 32, eval_batch_size: int = 100, num_workers: int = 0, seed: int = 1,
                 eval_cache_dir: str | None = None) -> None:
        super().__init__()
        self.task, self.load_image = task, load_image
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.eval_cache_dir = eval_cache_dir  # None: decode test images on every evaluation
        self.train_views: Tensor | None = None  # (K, N, D) frozen features of K augmented views, or None
        self.test_views = 0  # V > 0: test batches are (B, 1 + V, 3, H, W), the eval view + V augmented views
        self.test_view_transforms: dict[str, Callable] = {}  # eval set -> its views' augmentation (else train's)

    def use_test_views(self, method: PromptMethod) -> None:
        """Test batches as ``method`` is scored: (B, 1 + V, 3, H, W) with its own view augmentation per eval set
        for a test-time-adaptive method, plain eval images otherwise."""
        self.test_views = method.test_views if method.test_time_adaptive else 0
        self.test_view_transforms = {e.name: method.augmentation(self.train_transform, e.classes)
                                     for e in self.task.evals}

    def use_train_views(self, features: Tensor | None) -> None:
        """Train on (K, N, D) precomputed image features of the training set (None: on images)."""
        if features is not None and features.shape[1] != len(self.task.train):
            raise ValueError(f"{features.shape[1]} cached training features for {len(self.task.train)} images.")
        self.train_views = features

    def _loader(self, items, transform, batch_size: int, load_image: ImageLoader | None = None, **kwargs) -> DataLoader:
        return DataLoader(ImageDataset(items, load_image or self.load_image, transform), batch_size=batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **kwargs)

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _shard(self, items: list) -> list:
        """This rank's share of an evaluation list: every item on exactly one rank, no padding duplicates."""
        rank, world = self._rank_world()
        return items[rank::world] if world > 1 else items

    def train_dataloader(self) -> DataLoader:
        n = len(self.task.train)
        rank, world = self._rank_world()
        if self.batch_size % world:
            raise ValueError(f"data.batch_size={self.batch_size} is the global batch: it must divide by the "
                             f"{world} DDP processes.")
        # Dassl drops the last incomplete batch only when the set holds at least one full batch.
        if self.train_views is not None:  # (feature, label) batches in the image path's order
            labels = torch.tensor([d.label for d in self.task.train])  # (N,)
            sampler = TrainViewsSampler(n, self.seed, self.train_views.shape[0], rank, world)
            return DataLoader(TrainViewsDataset(self.train_views, labels), batch_size=self.batch_size // world,
                              sampler=sampler, drop_last=n >= self.batch_size)
        return self._loader(self.task.train, self.train_transform, self.batch_size // world,
                            sampler=EpochSeededSampler(n, self.seed, rank, world), drop_last=n >= self.batch_size)

    def train_eval_dataloader(self, transform: Callable | None = None) -> DataLoader:
        """The training images in order through ``transform``, by default the eval transform (feature extraction)."""
        return self._loader(self.task.train, transform or self.eval_transform, self.eval_batch_size)

    def val_dataloader(self) -> list[DataLoader]:
        if not self.task.val:
            return []
        return [self._loader(self._shard(self.task.val), self.eval_transform, self.eval_batch_size)]

    def test_dataloader(self) -> list[DataLoader]:
        if self.test_views:  # test-time adaptation: augmented views of each decoded test image
            return [DataLoader(MultiViewDataset(self._shard(e.items), e.load_image or self.load_image,
                                                self.eval_transform,
                                                self.test_view_transforms.get(e.name, self.train_transform),
                                                self.test_views, self.seed), batch_size=1, num_workers=self.num_workers)
                    for e in self.task.evals]
        stages = split_preprocess(self.eval_transform) if self.eval_cache_dir else None
        if stages is None:
            return [self._loader(self._shard(e.items), self.eval_transform, self.eval_batch_size, e.load_image)
                    for e in self.task.evals]
        pil_stage, tensor_stage = stages
        # The source dataset's eval sets (base + new) share one decoded array; each target dataset gets its own,
        # so a cross-dataset run reuses the per-dataset arrays instead of building one of everything.
        groups: dict[str, list] = {}
        for e in self.task.evals:
            groups.setdefault("source" if e.load_image is None else f"target:{e.name}", []).append(e)
        datasets = {}
        for evals in groups.values():
            load_image = evals[0].load_image or self.load_image
            refs = sorted({d.ref for e in evals for d in e.items})
            identity = getattr(load_image, "__qualname__", None) or repr(load_image)
            array = decoded_images(refs, load_image, pil_stage, Path(self.eval_cache_dir), identity, self.num_workers)
            rows = {ref: i for i, ref in enumerate(refs)}
            datasets.update({e.name: CachedImageDataset(self._shard(e.items), array, rows, tensor_stage) for e in evals})
        return [DataLoader(datasets[e.name], batch_size=self.eval_batch_size, num_workers=self.num_workers)
                for e in self.task.evals]
