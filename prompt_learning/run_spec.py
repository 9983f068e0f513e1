"""The typed run spec: a composed config, validated and converted once at the entry into dataclasses.

Each section is a dataclass, most of which Hydra also uses as the structured-config schema of their group
(so a misspelt key fails at composition); the engine's builders each take their own section. The method's
section is the method's own ``Config`` dataclass; a dataset's section stays a mapping, because each
dataset builder reads its own keys (folder, CSV, benchmark, synthetic).

Validation (docs/validation.md): every section declares its keys' ranges and choices in ``RULES``
(:mod:`prompt_learning.validation`); :meth:`RunSpec.from_container` checks the types, the rules and the
keys that depend on each other (the protocol's targets, the objective, ``trainer.max_epochs`` of a method
trained by gradient descent) and raises one ``ConfigurationError`` listing every problem, before any work.

No Lightning, no Hydra here: ``RunSpec.from_container`` takes the plain resolved dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prompt_learning.errors import ConfigurationError
from prompt_learning.validation import (
    BOOLEAN,
    Problems,
    Rule,
    check_fields,
    check_mapping,
    integer,
    is_integer,
    is_number,
    list_of,
    number,
    one_of,
    required_text,
    template_text,
)

LIGHTNING_PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
FROZEN_PRECISIONS = ("fp32", "bf16", "fp16", "pure_bf16", "pure_fp16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# trainer.strategy: auto and the names Lightning 2.6 registers (tests/test_hostile_values.py compares the registry)
_DDP = tuple(f"ddp{kind}{unused}" for kind in ("", "_spawn", "_fork", "_notebook")
             for unused in ("", "_find_unused_parameters_false", "_find_unused_parameters_true"))
LIGHTNING_STRATEGIES = ("auto", *_DDP, "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
                        "deepspeed_stage_3", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme", "fsdp",
                        "fsdp_cpu_offload", "single_device", "single_xla", "xla_debug", "xla", "single_tpu")
STRATEGY = one_of(LIGHTNING_STRATEGIES, "auto or a strategy Lightning registers (ddp, ddp_spawn, fsdp, deepspeed, ...)")
OBJECTIVES = ("val_acc", "train_time_s", "wall_time_s")  # numeric results.json keys of every run (plus the
# protocol's summary keys, e.g. hm): what an optimising sweeper may read as ``objective``

# -------------------------------------------------------------------------------------------- sections


@dataclass
class BackboneConfig:
    name: str = "???"  # short name used in run directories, e.g. vit_b16
    model: str = "???"  # open_clip architecture, e.g. ViT-B-16
    pretrained: str | None = None  # open_clip tag, checkpoint path, "packaged" (tiny_synthetic) or null
    precision: str = "fp32"  # precision of the frozen weights: fp32 | bf16 | fp16
    quick_gelu: bool | None = None  # null: as the pretrained tag says; true for local copies of OpenAI weights
    cache_dir: str | None = None

    RULES: ClassVar[dict[str, Rule]] = {"name": required_text("a short name for run directories, e.g. vit_b16"),
                                        "model": required_text("an open_clip architecture, e.g. ViT-B-16"),
                                        "precision": one_of(FROZEN_PRECISIONS)}


@dataclass
class SyntheticDatasetConfig:
    name: str = "synthetic"
    template: str = "a photo of a {}."
    train_per_class: int = 32
    val_per_class: int = 8
    test_per_class: int = 20
    render_seed: int = 0
    image_size: int = 64
    train_transform: str = "flip"


@dataclass
class FolderDatasetConfig:
    name: str = "folder"
    root: str | None = None
    run_name: str = "folder"  # the dataset's part of the run directory (default: folder-<root's base name>)
    template: str = "a photo of a {}."
    split_file: str | None = None
    split_fractions: list[float] = field(default_factory=lambda: [0.5, 0.2])
    split_seed: int = 0
    verify_images: bool = True
    train_transform: str = "random_resized_crop"


@dataclass
class CsvDatasetConfig:
    name: str = "csv"
    file: str | None = None  # the CSV listing the images
    root: str | None = None  # image paths are relative to it (default: the CSV's folder)
    run_name: str = "csv"
    path_column: str = "path"
    label_column: str = "label"  # class names, or integers with classnames_file
    split_column: str = "split"  # optional column with train / val / test
    classnames_file: str | None = None  # lines "<label> <class name>" for integer labels
    template: str = "a photo of a {}."
    split_fractions: list[float] = field(default_factory=lambda: [0.5, 0.2])
    split_seed: int = 0
    verify_images: bool = True
    train_transform: str = "random_resized_crop"


@dataclass
class BenchmarkDatasetConfig:
    name: str = "???"
    root: str | None = None  # the data root holding every benchmark's folder (data.root / PL_DATA_ROOT)
    template: str | None = None  # null: the dataset's hand-written template
    split_seed: int = 0  # only for the fallback split when the split file is absent
    train_transform: str = "random_resized_crop"


def _fractions(value: Any) -> bool:
    return (isinstance(value, list | tuple) and len(value) == 2 and all(is_number(v) for v in value)
            and value[0] > 0 and value[1] >= 0 and value[0] + value[1] < 1)


# The keys any dataset builder may read, checked where present (a dataset's section stays a mapping).
DATASET_RULES: dict[str, Rule] = {
    "name": required_text("a registered dataset, e.g. synthetic, folder, csv, dtd"),
    "template": template_text().or_null(),
    "train_per_class": integer(1, meaning="images per class"),
    "val_per_class": integer(0, meaning="images per class"),
    "test_per_class": integer(1, meaning="images per class"),
    "render_seed": integer(0), "split_seed": integer(0),
    "image_size": integer(8, meaning="pixels"),
    "split_fractions": Rule(_fractions, "[train, val] fractions of each class's images, train > 0, val >= 0, "
                                        "train + val < 1 (the rest is the test split), e.g. [0.5, 0.2]"),
    "verify_images": BOOLEAN,
    "run_name": required_text("a name for the run directory"),
    "path_column": required_text("a CSV column name"), "label_column": required_text("a CSV column name"),
    "split_column": required_text("a CSV column name"),
}


@dataclass
class ProtocolConfig:
    name: str = "???"  # a registered protocol (configs/protocol/<name>.yaml)
    eval_zero_shot: bool = True  # also test zero-shot CLIP on the same eval sets (recorded in results.json)
    targets: list[str] = field(default_factory=list)  # transfer protocols: the datasets to test on

    RULES: ClassVar[dict[str, Rule]] = {"name": required_text("a registered protocol (configs/protocol/)")}


@dataclass
class OptimConfig:
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5

    RULES: ClassVar[dict[str, Rule]] = {"lr": number(above=0), "momentum": number(0, below=1),
                                        "weight_decay": number(0), "warmup_epochs": integer(0),
                                        "warmup_lr": number(above=0)}


def _devices(value: Any) -> bool:
    """Lightning's ``devices``: a count >= 1, -1 (all), ``auto``, or the indices as a list or ``"0,1"``."""
    if is_integer(value):
        return value >= 1 or value == -1
    if isinstance(value, str):
        text = value.strip()
        if text == "auto":
            return True
        parts = [p.strip() for p in text.split(",") if p.strip()]
        return bool(parts) and all(p.lstrip("-").isdigit() for p in parts) and _devices(
            int(parts[0]) if len(parts) == 1 else [int(p) for p in parts])
    if isinstance(value, list | tuple):
        return bool(value) and all(is_integer(v) and v >= 0 for v in value) and len(set(value)) == len(value)
    return False


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"  # ddp: one process per device, data.batch_size is the global batch
    precision: str = "auto"  # Lightning precision: auto (bf16-mixed on a CUDA GPU, else 32-true) | 32-true | ...
    compile: str | None = None  # torch.compile the towers' block loops: null | default | reduce-overhead | ...
    compile_backend: str = "inductor"  # torch.compile backend (inductor needs a C++ compiler on a CPU)
    max_epochs: int = 10
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    enable_progress_bar: bool = True
    num_sanity_val_steps: int = 0

    RULES: ClassVar[dict[str, Rule]] = {
        "accelerator": one_of(ACCELERATORS),
        "devices": Rule(_devices, "a number of devices >= 1, -1 (all), auto, or device indices ([0, 1] or '0,1')"),
        "strategy": STRATEGY,
        "precision": one_of(LIGHTNING_PRECISIONS),
        "max_epochs": integer(0), "log_every_n_steps": integer(1), "check_val_every_n_epoch": integer(1),
        "num_sanity_val_steps": integer(0, special={-1: "every validation batch"}),
    }


@dataclass
class FeatureCacheConfig:
    # K > 0: text-only methods train on frozen features of K augmented views of each training image,
    # encoded once before training (cached on disk for named weights); 0: encode images at every step
    train_views: int = 0

    RULES: ClassVar[dict[str, Rule]] = {
        "train_views": integer(1, special={0: "off"}, meaning="augmented views of each training image to encode "
                                                             "once and train on")}


@dataclass
class DataConfig:
    batch_size: int = 32
    eval_batch_size: int = 100
    num_workers: int = 0
    root: str | None = None  # data root with the benchmarks' folders (CoOp's $DATA)
    eval_cache: bool = True  # decode + resize test images once, reuse across seeds / methods / base-new
    cache_dir: str = "~/.cache/prompt_learning/eval_images"
    feature_cache: FeatureCacheConfig = field(default_factory=FeatureCacheConfig)
    # Train on every image of the training split without its label (null: the method's default, true for upl and
    # promptkd); transductive: that set also holds the images of the classes tested on (null: the method's default)
    unlabeled: bool | None = None
    transductive: bool | None = None

    RULES: ClassVar[dict[str, Rule]] = {"batch_size": integer(1), "eval_batch_size": integer(1),
                                        "num_workers": integer(0, meaning="0: load in the main process"),
                                        "cache_dir": required_text("a folder")}


@dataclass
class PathsConfig:
    output_dir: str = "outputs"
    run_dir: str = "outputs/run"

    RULES: ClassVar[dict[str, Rule]] = {"output_dir": required_text("a folder"), "run_dir": required_text("a folder")}


SECTIONS: dict[str, type] = {"backbone": BackboneConfig, "protocol": ProtocolConfig, "optim": OptimConfig,
                             "trainer": TrainerConfig, "data": DataConfig, "paths": PathsConfig}
TOP_LEVEL_RULES: dict[str, Rule] = {
    "seed": integer(0, 2**32 - 1, meaning="the run seed; numpy's range"),
    "shots": integer(1, special={-1: "every training image"}, meaning="training images per class"),
    "resume": BOOLEAN, "skip_done": BOOLEAN,
    "plugins": list_of(required_text("a module or a .py file")),
}

# ------------------------------------------------------------------------------------------- the spec


def section(cls: type, values: Mapping[str, Any] | None, key: str) -> Any:
    """A section dataclass from a mapping, checked (unknown keys, types, ``RULES``) with one error for all."""
    problems = Problems()
    check_fields(problems, cls, values, key)
    problems.raise_if_any()
    return _build(cls, values)


def _build(cls: type, values: Mapping[str, Any] | None) -> Any:
    values = dict(values or {})
    for f in dataclasses.fields(cls):  # nested sections (data.feature_cache)
        factory = f.default_factory
        if f.name in values and isinstance(factory, type) and dataclasses.is_dataclass(factory):
            values[f.name] = _build(factory, values[f.name])
    return cls(**values)


def check_container(c: Mapping[str, Any]) -> None:
    """Every value of a resolved config, checked before anything runs: one ``ConfigurationError`` naming
    each refused key, its value and what the key accepts (plugins must be imported already)."""
    from prompt_learning.data.datasets import DATASETS
    from prompt_learning.methods.base import METHODS
    from prompt_learning.protocols import PROTOCOLS

    problems = Problems()
    for key, rule in TOP_LEVEL_RULES.items():
        if key in c:
            problems.require(key, c[key], rule)
    for key, cls in SECTIONS.items():
        check_fields(problems, cls, c.get(key), key)
    method = c.get("method") if isinstance(c.get("method"), Mapping) else {}
    method_cls = None
    if problems.require("method.name", method.get("name", "???"), one_of(METHODS.names())):
        method_cls = METHODS.get(method["name"])
        check_fields(problems, method_cls.Config, method, "method")
    dataset = c.get("dataset") if isinstance(c.get("dataset"), Mapping) else {}
    check_mapping(problems, dataset, DATASET_RULES, "dataset")
    if DATASET_RULES["name"](dataset.get("name")):
        problems.require("dataset.name", dataset["name"], one_of(DATASETS.names()))
    if "train_transform" in dataset:
        from prompt_learning.backbone.transforms import TRAIN_TRANSFORMS

        problems.require("dataset.train_transform", dataset["train_transform"], one_of(TRAIN_TRANSFORMS))
    protocol = c.get("protocol") if isinstance(c.get("protocol"), Mapping) else {}
    if ProtocolConfig.RULES["name"](protocol.get("name")) and problems.require(
            "protocol.name", protocol["name"], one_of(PROTOCOLS.names())):
        _check_protocol(problems, PROTOCOLS.get(protocol["name"]), protocol, dataset, c.get("objective"))
    if method_cls is not None:
        from prompt_learning.protocols.unlabeled import check_label_use

        check_label_use(problems, method_cls, c.get("data") or {})
    epochs = (c.get("trainer") or {}).get("max_epochs")
    if method_cls is not None and method_cls.trainable and not method_cls.fits_in_closed_form and epochs == 0:
        untrained = [f"method={n}" for n, m in METHODS.items().items() if not m.trainable]
        problems.add("trainer.max_epochs", epochs, "an integer >= 1",
                     f"Method {method_cls.name!r} is trained by gradient descent: 0 epochs would record an untrained "
                     f"model as a trained run (for the model without training use {' or '.join(untrained)}).")
    problems.raise_if_any()


def _check_protocol(problems: Problems, protocol: Any, values: Mapping[str, Any], dataset: Mapping[str, Any],
                    objective: Any) -> None:
    """The keys that depend on the protocol: its targets (registered datasets, none repeated, not the source)
    and the sweep objective (a numeric key of its results.json)."""
    from prompt_learning.data.datasets import DATASETS
    from prompt_learning.protocols import PROTOCOLS

    targets = values.get("targets") or []
    targets = list(targets) if isinstance(targets, list | tuple) else []
    if protocol.needs_targets and not targets:
        problems.add("protocol.targets", targets, "a non-empty list of datasets to test on",
                     f"protocol={protocol.name} trains on dataset= and tests on each target (e.g. [dtd, eurosat]).")
    elif not protocol.needs_targets and targets:
        readers = " / ".join(n for n, p in PROTOCOLS.items().items() if p.needs_targets)
        problems.add("protocol.targets", targets, "[] with this protocol",
                     f"protocol={protocol.name} tests on the training dataset only; targets are read by "
                     f"protocol={readers}.")
    else:
        for i, target in enumerate(targets):
            problems.require(f"protocol.targets[{i}]", target, one_of(DATASETS.names()))
        if len(set(map(str, targets))) != len(targets) or dataset.get("name") in targets:
            problems.add("protocol.targets", targets, "each target dataset once, none of them the source",
                         f"dataset={dataset.get('name')} is tested as the source already.")
    if objective is not None:
        problems.require("objective", objective, one_of([*OBJECTIVES, *(k for k, _ in protocol.summary_columns)]))


@dataclass
class RunSpec:
    """One run, typed. ``container`` keeps the whole resolved config: results.json records it and the
    run fingerprint is computed from it."""

    seed: int
    shots: int
    backbone: BackboneConfig
    method: Any  # the method's own Config dataclass (a MethodConfig subclass; typed Any to keep this module light)
    dataset: dict[str, Any]
    protocol: ProtocolConfig
    optim: OptimConfig
    trainer: TrainerConfig
    data: DataConfig
    paths: PathsConfig
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    resume: bool = True
    skip_done: bool = True
    plugins: list[str] = field(default_factory=list)
    container: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_name(self) -> str:
        return str(self.dataset.get("name"))

    @classmethod
    def from_container(cls, container: Mapping[str, Any]) -> RunSpec:
        """Validate the resolved config (:func:`check_container`) and convert it. Plugins are imported
        first, so that the methods, datasets and protocols they register are known to the checks."""
        from prompt_learning.methods.base import build_config, method_class
        from prompt_learning.registry import import_plugins

        c = dict(container)
        if not isinstance(c.get("plugins") or [], list):
            raise ConfigurationError(f"plugins={c.get('plugins')!r} is not valid; use a list of modules or .py files.")
        plugins = import_plugins(c.get("plugins") or [])  # absolute paths: a re-test finds them from anywhere
        container = {**container, "plugins": plugins} if "plugins" in container else dict(container)
        check_container(c)
        method = dict(c.get("method") or {})
        return cls(
            seed=c.get("seed", 1), shots=c.get("shots", 16),
            backbone=_build(BackboneConfig, c.get("backbone")),
            method=build_config(method_class(str(method.get("name", "???"))), method),
            dataset=dict(c.get("dataset") or {}),
            protocol=_build(ProtocolConfig, c.get("protocol")),
            optim=_build(OptimConfig, c.get("optim")),
            trainer=_build(TrainerConfig, c.get("trainer")),
            data=_build(DataConfig, c.get("data")),
            paths=_build(PathsConfig, c.get("paths")),
            logger=dict(c.get("logger") or {}), callbacks=dict(c.get("callbacks") or {}),
            resume=c.get("resume", True), skip_done=c.get("skip_done", True),
            plugins=plugins, container=dict(container),
        )
