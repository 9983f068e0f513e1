"""PromptDataModule: a protocol's task -> data loaders (train, few-shot val, one test loader per eval set)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader

from prompt_learning.data.image_dataset import EpochSeededSampler, ImageDataset
from prompt_learning.data.types import ImageLoader
from prompt_learning.protocols import Task


class PromptDataModule(L.LightningDataModule):
    def __init__(self, task: Task, load_image: ImageLoader, train_transform: Callable, eval_transform: Callable,
                 batch_size: int = 32, eval_batch_size: int = 100, num_workers: int = 0, seed: int = 1) -> None:
        super().__init__()
        self.task, self.load_image = task, load_image
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed

    def _loader(self, items, transform, batch_size: int, **kwargs) -> DataLoader:
        return DataLoader(ImageDataset(items, self.load_image, transform), batch_size=batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        n = len(self.task.train)
        # Dassl drops the last incomplete batch only when the set holds at least one full batch.
        return self._loader(self.task.train, self.train_transform, self.batch_size,
                            sampler=EpochSeededSampler(n, self.seed), drop_last=n >= self.batch_size)

    def train_eval_dataloader(self) -> DataLoader:
        """The training images through the eval transform, in order (feature extraction)."""
        return self._loader(self.task.train, self.eval_transform, self.eval_batch_size)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.task.val, self.eval_transform, self.eval_batch_size)] if self.task.val else []

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(e.items, self.eval_transform, self.eval_batch_size) for e in self.task.evals]
