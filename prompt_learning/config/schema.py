"""Structured-config schemas, registered with Hydra's ConfigStore under ``schema/<group>/<name>``.

Each group YAML starts with ``defaults: [/schema/<group>/<name>@_here_, _self_]``, so a misspelt key
fails at composition with ``Key 'n_ctxx' not in 'CoOpConfig'``. Method schemas come from each
method's own ``Config`` dataclass (found by ``list_methods()``), so adding a method edits nothing here.
Schemas live in their own group so that "Available options" for ``method=`` lists only real methods.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from prompt_learning.methods import list_methods


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
    name: str = "???"  # base2new | few_shot | cross_dataset | domain_gen
    eval_zero_shot: bool = True  # also test zero-shot CLIP on the same eval sets (recorded in results.json)
    targets: list[str] = field(default_factory=list)  # cross_dataset / domain_gen: datasets to test on


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
class LoggerConfig:
    name: str = "csv"  # csv | wandb | none
    project: str = "prompt_learning"
    mode: str = "online"  # wandb: online | offline
    group: str | None = None


SCHEMAS = {
    "backbone": {"backbone": BackboneConfig},
    "dataset": {"synthetic": SyntheticDatasetConfig, "folder": FolderDatasetConfig, "csv": CsvDatasetConfig,
                "benchmark": BenchmarkDatasetConfig},
    "protocol": {"protocol": ProtocolConfig},
    "optim": {"sgd": OptimConfig},
    "trainer": {"trainer": TrainerConfig},
    "data": {"data": DataConfig},
    "logger": {"logger": LoggerConfig},
}


def _basename(path: str | None) -> str:
    """``<base name>-<6 hex digits of the absolute path's SHA-1>`` (``none`` without a path): readable, and
    different for two folders that share a base name (``.../pets/images`` and ``.../cars/images``)."""
    if path in (None, "", "None"):
        return "none"
    absolute = Path(str(path)).expanduser().absolute()
    return f"{absolute.name}-{hashlib.sha1(str(absolute).encode()).hexdigest()[:6]}"


def _sweep_suffix() -> str:
    """In a multirun, ``/<overrides>`` of the keys swept or set that the run path does not already name
    (``hydra.job.override_dirname`` minus its ``exclude_keys``), so that two points never share a run
    directory; empty for single runs and plain composition."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    name = hydra_cfg.job.override_dirname if hydra_cfg.mode == RunMode.MULTIRUN else ""
    return f"/{name}" if name else ""


def register_configs() -> None:
    """Store every schema and the resolvers (idempotent); call before Hydra composes ``configs/``."""
    OmegaConf.register_new_resolver("basename", _basename, replace=True)
    OmegaConf.register_new_resolver("sweep_suffix", _sweep_suffix, replace=True)
    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)
    for name, cls in list_methods().items():
        store.store(group="schema/method", name=name, node=cls.Config)
