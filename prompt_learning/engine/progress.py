"""The Lightning progress bar of a run: rich on a terminal, plain lines in a log, without the noise.

* No ``v_num`` (the logger's version number, which says nothing about the run) among the metrics.
* No ``0.00it/s`` while a rate is unknown (the first, or only, batch of a stage): the rate column stays empty
  until a batch has finished, then reads ``3.8 it/s``, or ``63.0 s/it`` for slow steps (a frozen ViT on a CPU).
* Epochs are counted from 1 (``Epoch 3/3`` is the last of three).
* When stdout is not a terminal (a batch job's log), rich would print nothing until a stage ends; the run
  writes plain progress lines to stderr instead (:class:`~prompt_learning.progress.Progress`): one for
  training as a whole and one per test, with counts, rate, ETA, the epoch and its metrics.

``trainer.enable_progress_bar=false`` turns the bar off; a progress bar among the config's ``callbacks``
replaces this one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar
from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text

from prompt_learning.progress import Progress, batch_size_of, format_rate


def bar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics worth showing: Lightning's standard ``v_num`` left out."""
    return {k: v for k, v in metrics.items() if k != "v_num"}


def metrics_text(metrics: dict[str, Any]) -> str:
    """``loss 1.123, val/acc 33.3``: numbers in four significant digits."""
    parts = []
    for key, value in bar_metrics(metrics).items():
        value = value.item() if hasattr(value, "item") else value
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


class RateColumn(ProgressColumn):
    """``3.8 it/s`` or ``63.0 s/it`` from the batches done and the time taken; empty while nothing is done."""

    def __init__(self, style: Any = None) -> None:
        super().__init__()
        self.style = style

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed  # rich's recent rate: known once two updates are in its window
        if speed:
            return Text(format_rate(speed, 1.0, "it"), style=self.style or "")
        elapsed = task.finished_time if task.finished else task.elapsed  # a finished bar's rate stays put
        return Text(format_rate(task.completed, elapsed or 0.0, "it"), style=self.style or "")


class RunRichProgressBar(RichProgressBar):
    """Lightning's rich bar, without ``v_num``, with :class:`RateColumn` and epochs counted from 1."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return bar_metrics(super().get_metrics(trainer, pl_module))

    def configure_columns(self, trainer: L.Trainer) -> list:
        columns = super().configure_columns(trainer)
        rate = RateColumn(self.theme.processing_speed)
        return [rate if type(c).__name__ == "ProcessingSpeedColumn" else c for c in columns]

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = f"/{self.trainer.max_epochs}" if self.trainer.max_epochs not in (None, -1) else ""
        return f"{f'Epoch {current_epoch + 1}{epochs}':{len(self.validation_description)}}"


class LineProgressBar(ProgressBar):
    """Plain progress lines on stderr for logs: training as one phase (all epochs), each test as one phase."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._phase: Progress | None = None
        self._metrics = ""

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return bar_metrics(super().get_metrics(trainer, pl_module))

    def _open(self, description: str, total: float, completed: int = 0, unit: str = "it", noun: str = "batches"
              ) -> None:
        self._close()
        if self._enabled:
            known = int(total) if math.isfinite(total) and total > 0 else None
            self._phase = Progress(description, known, unit, noun=noun, completed=completed, enabled=True,
                                   live=False).start()

    def _close(self, report: bool = True) -> None:
        if self._phase is not None:
            self._phase.close(report)
            self._phase = None

    def _show_epoch(self, trainer: L.Trainer, metrics: str | None = None) -> None:
        """The training line's postfix: the epoch (from 1) and the latest metrics."""
        if metrics is not None:
            self._metrics = metrics
        if self._phase is not None:
            epochs = f"/{trainer.max_epochs}" if trainer.max_epochs not in (None, -1) else ""
            self._phase.set_postfix(f"epoch {trainer.current_epoch + 1}{epochs}"
                                    + (f"; {self._metrics}" if self._metrics else ""))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_epoch = self.total_train_batches
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
        done = trainer.current_epoch * per_epoch if math.isfinite(per_epoch) else 0
        self._metrics = ""
        self._open(self.train_description, per_epoch * epochs, int(done))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show_epoch(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._phase is not None:
            self._phase.advance(1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show_epoch(trainer, metrics_text(self.get_metrics(trainer, pl_module)))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._phase is not None:
            self._show_epoch(trainer, metrics_text(self.get_metrics(trainer, pl_module)))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Testing counts images (rate in img/s, ETA): a test-time-adaptive method takes seconds per image."""
        loaders = trainer.test_dataloaders
        loaders = loaders if isinstance(loaders, list) else [loaders]
        try:
            images = sum(len(loader.dataset) for loader in loaders)
        except (TypeError, AttributeError):
            images = math.inf
        self._open(self.test_description, images, unit="img", noun="images")

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._phase is not None:
            self._phase.advance(batch_size_of(batch))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close(report=False)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._close(report=False)


def run_progress_bar(enabled: bool, callbacks: Sequence[Callback] = ()) -> list[Callback]:
    """The progress bar to add to a Trainer's callbacks: none when ``enabled`` is false or ``callbacks``
    already hold one; rich when stdout (where rich draws) is a terminal, plain lines otherwise."""
    if not enabled or any(isinstance(c, ProgressBar) for c in callbacks):
        return []
    return [RunRichProgressBar() if Console().is_terminal else LineProgressBar()]
