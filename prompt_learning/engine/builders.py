"""Data set-up: the dataset, the protocol's task and its loaders, each from its own section of the spec."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.data.checks import report_on
from prompt_learning.data.datasets import build_dataset
from prompt_learning.data.split_files import write_split_file
from prompt_learning.data.types import DatasetSplits
from prompt_learning.engine.datamodule import PromptDataModule
from prompt_learning.errors import ConfigurationError, DataError
from prompt_learning.methods import PromptMethod
from prompt_learning.methods.base import method_class
from prompt_learning.protocols import PROTOCOLS, Task, get_protocol
from prompt_learning.protocols.unlabeled import resolved_label_use, unlabeled_task
from prompt_learning.run_spec import RunSpec

log = logging.getLogger(__name__)


def build_targets(spec: RunSpec) -> list[DatasetSplits]:
    """The target datasets of a transfer protocol (``protocol.targets``), read from the same data root."""
    if not get_protocol(spec.protocol.name).needs_targets:
        return []
    return [build_dataset({"name": name, "root": spec.data.root, "template": None, "split_seed": 0})
            for name in spec.protocol.targets]


def build_data(spec: RunSpec, backbone: FrozenCLIP, run_dir: Path | None = None) -> tuple[Task, PromptDataModule]:
    """The protocol's task and its loaders; a split drawn here (not read from a file) is saved to
    ``<run_dir>/dataset_split.json`` (Dassl format) so that it can be reused as ``dataset.split_file``."""
    splits = build_dataset(spec.dataset)
    report = report_on(splits, spec.shots)
    for note in report.notes:
        log.info("%s: %s", splits.name, note)
    if not report.ok:
        raise DataError(f"Dataset {splits.name!r}: {'; '.join(report.problems)}. Run scripts/check_data.py with the "
                        f"same arguments for details.")
    if run_dir is not None and splits.generated_split and "root" in splits.info:
        write_split_file(run_dir / "dataset_split.json", Path(splits.info["root"]), splits.train, splits.val,
                         splits.test)
    task = get_protocol(spec.protocol.name).build_task(splits, spec.shots, spec.seed, build_targets(spec))
    unlabeled, transductive = resolved_label_use(method_class(spec.method.name), dataclasses.asdict(spec.data))
    if unlabeled:  # every training image, without its label (protocols/unlabeled.py)
        task = unlabeled_task(task, splits, transductive)
        log.info("Training on %d unlabeled images of %d classes%s", len(task.train), len(task.train_classes),
                 " (transductive: the test classes' images included)" if transductive else "")
    data = spec.data
    dm = PromptDataModule(task, splits.load_image, backbone.train_transform(spec.dataset["train_transform"]),
                          backbone.preprocess_eval, data.batch_size, data.eval_batch_size, data.num_workers,
                          spec.seed, str(Path(data.cache_dir).expanduser()) if data.eval_cache else None)
    return task, dm


def check_method_scores_task(method: PromptMethod, task: Task, protocol: str) -> None:
    """Before training: the method must be able to score every eval set of the task (the rule itself is
    ``PromptMethod.check_classes``); the error names the protocols whose eval sets it can score."""
    for eval_set in task.evals:
        try:
            method.check_classes(eval_set.classes)
        except ConfigurationError as exc:
            closed = [name for name in PROTOCOLS if not get_protocol(name).tests_unseen_classes]
            use = " or ".join(f"protocol={name}" for name in closed)
            raise ConfigurationError(f"protocol={protocol} tests on classes unseen in training, which method "
                                     f"{method.name!r} with this config cannot score: it learns parameters per "
                                     f"training class. Use {use}, or a config without per-class parameters. "
                                     f"({exc})") from exc
