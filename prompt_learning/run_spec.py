"""The typed run spec: a composed config, validated and converted once at the entry into dataclasses.

Each section is a dataclass, most of which Hydra also uses as the structured-config schema of their group
(so a misspelt key fails at composition); the engine's builders each take their own section. The method's
section is the method's own ``Config`` dataclass; a dataset's section stays a mapping, because each
dataset builder reads its own keys (folder, CSV, benchmark, synthetic).

No Lightning, no Hydra here: ``RunSpec.from_container`` takes the plain resolved dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prompt_learning.errors import ConfigurationError

# -------------------------------------------------------------------------------------------- sections


@dataclass
class BackboneConfig:
    name: str = "???"  # short name used in run directories, e.g. vit_b16
    model: str = "???"  # open_clip architecture, e.g. ViT-B-16
    pretrained: str | None = None  # open_clip tag, checkpoint path, "packaged" (tiny_synthetic) or null
    precision: str = "fp32"  # precision of the frozen weights: fp32 | bf16 | fp16
    quick_gelu: bool | None = None  # null: as the pretrained tag says; true for local copies of OpenAI weights
    cache_dir: str | None = None


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


@dataclass
class ProtocolConfig:
    name: str = "???"  # a registered protocol (configs/protocol/<name>.yaml)
    eval_zero_shot: bool = True  # also test zero-shot CLIP on the same eval sets (recorded in results.json)
    targets: list[str] = field(default_factory=list)  # transfer protocols: the datasets to test on


@dataclass
class OptimConfig:
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5


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


@dataclass
class FeatureCacheConfig:
    # K > 0: text-only methods train on frozen features of K augmented views of each training image,
    # encoded once before training (cached on disk for named weights); 0: encode images at every step
    train_views: int = 0


@dataclass
class DataConfig:
    batch_size: int = 32
    eval_batch_size: int = 100
    num_workers: int = 0
    root: str | None = None  # data root with the benchmarks' folders (CoOp's $DATA)
    eval_cache: bool = True  # decode + resize test images once, reuse across seeds / methods / base-new
    cache_dir: str = "~/.cache/prompt_learning/eval_images"
    feature_cache: FeatureCacheConfig = field(default_factory=FeatureCacheConfig)


@dataclass
class PathsConfig:
    output_dir: str = "outputs"
    run_dir: str = "outputs/run"


# ------------------------------------------------------------------------------------------- the spec


def section(cls: type, values: Mapping[str, Any] | None, key: str) -> Any:
    """A section dataclass from a mapping; unknown keys are named (Hydra's schemas catch them earlier)."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigurationError(f"Unknown key(s) {unknown} in {key}; valid keys: {sorted(fields)}.")
    for name, f in fields.items():  # nested sections (data.feature_cache)
        factory = f.default_factory
        if name in values and isinstance(factory, type) and dataclasses.is_dataclass(factory):
            values[name] = section(factory, values[name], f"{key}.{name}")
    return cls(**values)


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
        """Validate the resolved config and convert it. Plugins are imported first, so that the
        methods, datasets and protocols they register are known to the checks."""
        from prompt_learning.methods.base import build_config, method_class
        from prompt_learning.registry import import_plugins

        c = dict(container)
        plugins = import_plugins(c.get("plugins") or [])  # absolute paths: a re-test finds them from anywhere
        container = {**container, "plugins": plugins} if "plugins" in container else dict(container)
        method = dict(c.get("method") or {})
        return cls(
            seed=_integer(c.get("seed", 1), "seed"), shots=_integer(c.get("shots", 16), "shots"),
            backbone=section(BackboneConfig, c.get("backbone"), "backbone"),
            method=build_config(method_class(str(method.get("name", "???"))), method),
            dataset=dict(c.get("dataset") or {}),
            protocol=section(ProtocolConfig, c.get("protocol"), "protocol"),
            optim=section(OptimConfig, c.get("optim"), "optim"),
            trainer=section(TrainerConfig, c.get("trainer"), "trainer"),
            data=section(DataConfig, c.get("data"), "data"),
            paths=section(PathsConfig, c.get("paths"), "paths"),
            logger=dict(c.get("logger") or {}), callbacks=dict(c.get("callbacks") or {}),
            resume=bool(c.get("resume", True)), skip_done=bool(c.get("skip_done", True)),
            plugins=plugins, container=dict(container),
        )


def _integer(value: Any, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{key}={value!r} is not an integer.") from exc
