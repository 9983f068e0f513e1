"""What a run tells its loggers besides the training curves: the resolved config, the test metrics, and a
logging interval that suits the length of its epochs.

* ``start_tracking``: before fitting, the logging interval becomes at most one epoch's training batches (a
  few-shot epoch has 1-4 batches, fewer than ``trainer.log_every_n_steps``, so the step loss would never be
  logged), and every logger gets the resolved config through ``log_hyperparams`` (W&B config, CSV
  ``hparams.yaml``, TensorBoard / MLflow parameters);
* ``log_test_metrics``: after testing, every numeric test metric (``test/<eval>_acc``, ``test/hm``,
  ``test/target_mean``, ... whatever the protocol summarised), the zero-shot baseline's (``zero_shot/...``)
  and the validation accuracy (``val/acc``) go to every logger in one ``log_metrics`` call; a W&B run also
  gets them as summary values, which is what a W&B sweep's ``metric.name`` is read from.

Only Lightning's generic logger API is used, except the W&B summary.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger, WandbLogger

TEST_PREFIX, ZERO_SHOT_PREFIX = "test", "zero_shot"


def train_batches_per_epoch(n_train: int, batch_size: int, world_size: int = 1) -> int:
    """Training batches of one epoch on each process, as ``PromptDataModule.train_dataloader`` makes them:
    ``n_train // world_size`` samples per process in batches of ``batch_size // world_size`` (the global
    batch), the last incomplete batch dropped only when the set holds at least one full batch."""
    world = max(1, world_size)
    samples, batch = n_train // world, max(1, batch_size // world)
    full, rest = divmod(samples, batch)
    return full if n_train >= batch_size else full + bool(rest)


def epoch_logging_interval(configured: int, batches_per_epoch: int) -> int:
    """``trainer.log_every_n_steps`` capped at one epoch's batches, so every epoch logs the step loss at
    least once (0, Lightning's "never", stays 0)."""
    if configured <= 0:
        return configured
    return max(1, min(configured, batches_per_epoch))


def start_tracking(trainer: L.Trainer, config: Mapping[str, Any], n_train: int, batch_size: int) -> None:
    """Before fitting: cap the trainer's logging interval at an epoch (``n_train`` training images in global
    batches of ``batch_size``, shared by ``trainer.world_size`` processes), and log ``config`` (the resolved
    config, a plain dict) as every logger's hyperparameters."""
    batches = train_batches_per_epoch(n_train, batch_size, trainer.world_size)
    trainer.log_every_n_steps = epoch_logging_interval(trainer.log_every_n_steps, batches)
    for logger in trainer.loggers:
        logger.log_hyperparams(dict(config))


def _numeric_leaves(tree: Mapping[str, Any], parts: tuple[str, ...] = ()) -> Iterator[tuple[str, float]]:
    """``(name, value)`` of every number in a results mapping: the per-eval-set ``metrics`` mapping is
    transparent (``metrics.base.acc`` -> ``base_acc``), other nesting levels join with ``_``."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _numeric_leaves(value, parts if key == "metrics" else (*parts, str(key)))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield "_".join((*parts, str(key))), float(value)


def evaluation_metrics(results: Mapping[str, Any], zero_shot: Mapping[str, Any] | None = None,
                 val_acc: float | None = None) -> dict[str, float]:
    """The flat metrics of a run's evaluation (``evaluate_method``'s ``results``, and the zero-shot
    baseline's when it was evaluated): ``test/<name>``, ``zero_shot/<name>``, and ``val/acc`` (the last
    epoch's validation accuracy, what sweeps optimise) when the run measured one."""
    metrics = {f"{TEST_PREFIX}/{name}": value for name, value in _numeric_leaves(results)}
    if zero_shot:
        metrics.update({f"{ZERO_SHOT_PREFIX}/{name}": value for name, value in _numeric_leaves(zero_shot)})
    if val_acc is not None:
        metrics["val/acc"] = float(val_acc)
    return metrics


def log_test_metrics(loggers: Sequence[Logger], metrics: Mapping[str, float], step: int) -> None:
    """Log ``metrics`` (from ``evaluation_metrics``) to every logger at ``step`` and finalise each logger
    again (Lightning finalised them after testing; this writes the new values out); a W&B run also keeps
    them as summary values, so a sweep can optimise any of them by name."""
    if not metrics:
        return
    for logger in loggers:
        logger.log_metrics(dict(metrics), step=step)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(dict(metrics))
        logger.finalize("success")
