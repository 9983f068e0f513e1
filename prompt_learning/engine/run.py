"""Run a composed config end to end: data -> task -> backbone + method -> fit -> test -> results + export.

``train_and_test(cfg)`` is what ``scripts/train.py`` calls and what the tests call directly;
``evaluate(run_dir)`` re-tests a finished run from its export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
import traceback
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.backbone.towers import COMPILE_MODES
from prompt_learning.backbone.transforms import TRAIN_TRANSFORMS
from prompt_learning.data.checks import report_on
from prompt_learning.data.datasets import build_dataset
from prompt_learning.data.feature_cache import cached_image_features
from prompt_learning.data.split_files import write_split_file
from prompt_learning.data.train_views import cached_train_views
from prompt_learning.engine.datamodule import PromptDataModule
from prompt_learning.engine.module import PromptLearningModule
from prompt_learning.errors import ConfigurationError, DataError, RunDirectoryInUse
from prompt_learning.export import load_method, save_export
from prompt_learning.files import atomic_write_json
from prompt_learning.methods import PromptMethod, create_method, method_class
from prompt_learning.methods.base import build_config
from prompt_learning.protocols import PROTOCOLS, TRANSFER_PROTOCOLS, Task, build_task, harmonic_mean
from prompt_learning.provenance import git_commit, package_versions

log = logging.getLogger(__name__)
RESULTS_SCHEMA_VERSION = 1
# The frozen backbone is in eval mode on purpose (FrozenCLIP pins it); Lightning warns about that.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*No pretrained weights loaded.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning vs torch 2.14
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # resuming


class _DropLightningTips(logging.Filter):
    """Lightning advertises companion packages at every fit; keep its other messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLightningTips())


LIGHTNING_PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
FROZEN_PRECISIONS = ("fp32", "bf16", "fp16", "pure_bf16", "pure_fp16")


def validate_choices(cfg: DictConfig) -> None:
    """Check every choice-valued key (and the method's config) before any model or data is loaded."""
    checks = [("protocol.name", cfg.protocol.name, tuple(PROTOCOLS)),
              ("trainer.precision", str(cfg.trainer.precision), LIGHTNING_PRECISIONS),
              ("backbone.precision", cfg.backbone.precision, FROZEN_PRECISIONS),
              ("dataset.train_transform", cfg.dataset.train_transform, TRAIN_TRANSFORMS),
              ("logger.name", cfg.logger.name, ("csv", "wandb", "none"))]
    for key, value, choices in checks:
        if value not in choices:
            raise ConfigurationError(f"{key}={value!r} is not a valid choice; use one of {list(choices)}.")
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"trainer.accelerator={cfg.trainer.accelerator!r} but no CUDA GPU is visible here; "
                                 f"use trainer=cpu (or trainer=default, which picks what is available).")
    compile_mode(cfg)
    views = OmegaConf.select(cfg, "data.feature_cache.train_views", default=0)
    if not isinstance(views, int) or views < 0:
        raise ConfigurationError(f"data.feature_cache.train_views={views!r}: use 0 (off) or the number K >= 1 of "
                                 f"augmented views of each training image to encode once and train on.")
    build_config(method_class(cfg.method.name), OmegaConf.to_container(cfg.method, resolve=True))


def compile_mode(cfg: DictConfig) -> str | None:
    """``trainer.compile`` checked: None (off) or a torch.compile mode (``true`` means ``default``); the backend
    must be one torch knows, and inductor on a CPU needs a C++ compiler, which is checked here, not at step 1."""
    mode = OmegaConf.select(cfg, "trainer.compile", default=None)
    if mode is None or str(mode).lower() in ("false", "none", "null", "off"):
        return None
    mode = "default" if str(mode).lower() == "true" else str(mode)
    if mode not in COMPILE_MODES:
        raise ConfigurationError(f"trainer.compile={mode!r} is not a valid choice; use null (off) or one of "
                                 f"{list(COMPILE_MODES)}.")
    backend = str(OmegaConf.select(cfg, "trainer.compile_backend", default="inductor"))
    import torch._dynamo  # only when compiling

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigurationError(f"trainer.compile_backend={backend!r} is not a torch.compile backend; use one of "
                                 f"{sorted(known)}.")
    on_cpu = cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()
    compilers = [os.environ.get("CXX", "g++"), "g++", "clang++"]
    if backend == "inductor" and on_cpu and not any(shutil.which(c) for c in compilers):
        raise ConfigurationError("trainer.compile with the inductor backend on a CPU needs a C++ compiler (g++ or "
                                 "clang++, or set CXX); install one, or set trainer.compile=null.")
    return mode


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 autocast (fp32 prompt weights, frozen weights cast once) on a CUDA GPU with bf16
    support, full fp32 elsewhere (CPU autocast is slower than fp32 on most CPUs). Other values pass through."""
    if str(precision) != "auto":
        return str(precision)
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def build_backbone(cfg: DictConfig) -> FrozenCLIP:
    b = cfg.backbone
    backbone = FrozenCLIP(b.model, b.pretrained, precision=b.precision, cache_dir=b.cache_dir, quick_gelu=b.quick_gelu)
    mode = compile_mode(cfg)
    if mode is not None:
        backbone.compile_towers(mode, str(cfg.trainer.compile_backend))
    return backbone


def build_targets(cfg: DictConfig) -> list:
    """The target datasets of a cross-dataset / DG protocol, read from the same data root."""
    if cfg.protocol.name not in TRANSFER_PROTOCOLS:
        return []
    root = OmegaConf.select(cfg, "data.root")
    return [build_dataset({"name": name, "root": root, "template": None, "split_seed": 0})
            for name in cfg.protocol.targets]


def build_data(cfg: DictConfig, backbone: FrozenCLIP, run_dir: Path | None = None) -> tuple[Task, PromptDataModule]:
    """The protocol's task and its loaders; a split drawn here (not read from a file) is saved to
    ``<run_dir>/dataset_split.json`` (Dassl format) so that it can be reused as ``dataset.split_file``."""
    splits = build_dataset(OmegaConf.to_container(cfg.dataset, resolve=True))
    report = report_on(splits, int(cfg.shots))
    for note in report.notes:
        log.info("%s: %s", splits.name, note)
    if not report.ok:
        raise DataError(f"Dataset {splits.name!r}: {'; '.join(report.problems)}. Run scripts/check_data.py with the "
                        f"same arguments for details.")
    if run_dir is not None and splits.generated_split and "root" in splits.info:
        write_split_file(run_dir / "dataset_split.json", Path(splits.info["root"]), splits.train, splits.val,
                         splits.test)
    task = build_task(cfg.protocol.name, splits, int(cfg.shots), int(cfg.seed), build_targets(cfg))
    dm = PromptDataModule(task, splits.load_image, backbone.train_transform(cfg.dataset.train_transform),
                          backbone.preprocess_eval, cfg.data.batch_size,
                          cfg.data.eval_batch_size, cfg.data.num_workers, int(cfg.seed),
                          str(Path(cfg.data.cache_dir).expanduser()) if cfg.data.eval_cache else None)
    return task, dm


def check_method_fits_task(method: PromptMethod, task: Task, protocol: str) -> None:
    if task.needs_unseen_classes and not method.supports_unseen_classes:
        raise ConfigurationError(f"protocol={protocol} tests on classes unseen in training, which method "
                                 f"{method.name!r} with this config cannot score: it learns parameters per training "
                                 f"class. Use protocol=few_shot, or a config without per-class parameters.")


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    name = cfg.logger.name
    if name == "none":
        return []
    if name == "csv":
        return [CSVLogger(save_dir=run_dir, name="logs")]  # logs/version_N: a resumed attempt never overwrites
    if name == "wandb":
        if importlib.util.find_spec("wandb") is None:
            raise ConfigurationError("logger=wandb needs the wandb package: `uv sync --extra wandb`.")
        from lightning.pytorch.loggers import WandbLogger

        tags = [cfg.method.name, cfg.dataset.name, cfg.protocol.name, cfg.backbone.name, f"shots_{cfg.shots}"]
        return [WandbLogger(project=cfg.logger.project, save_dir=str(run_dir), offline=cfg.logger.mode == "offline",
                            group=cfg.logger.group, tags=tags, name=os.path.relpath(run_dir, cfg.paths.output_dir))]
    raise ConfigurationError(f"logger.name={name!r}; choose csv, wandb or none.")


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: Sequence[Callback] = ()) -> L.Trainer:
    t = cfg.trainer
    # Saved after the method's epoch-end hook (e.g. PromptSRC's prompt aggregation), so a resume sees its state.
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=1,
                                 save_on_train_epoch_end=True)
    # The datamodule shards every split itself (no padding duplicates in evaluation), hence no distributed sampler.
    return L.Trainer(accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, use_distributed_sampler=False,
                     precision=resolve_precision(t.precision, t.accelerator), max_epochs=t.max_epochs,
                     log_every_n_steps=t.log_every_n_steps, check_val_every_n_epoch=t.check_val_every_n_epoch,
                     enable_progress_bar=t.enable_progress_bar, num_sanity_val_steps=t.num_sanity_val_steps,
                     default_root_dir=run_dir, logger=build_loggers(cfg, run_dir) or False,
                     callbacks=[checkpoint, *callbacks], enable_model_summary=False)


@torch.no_grad()
def extract_features(method: PromptMethod, loader) -> tuple[Tensor, Tensor]:
    """(N, D) normalised frozen image features and (N,) labels of every batch of ``loader``."""
    method.eval()
    features, labels = [], []
    for images, y in loader:
        features.append(method.encode_images(images.to(method.backbone.device)).float().cpu())
        labels.append(y)
    return torch.cat(features), torch.cat(labels)


def fit_on_features(method: PromptMethod, dm: PromptDataModule, device: torch.device) -> dict[str, Any]:
    """Fit a ``fits_on_features`` method (linear probe) on training images seen through the eval
    transform (no augmentation, as lpclip) and choose its hyperparameters on the val split. Features
    are extracted on ``device`` (the trainer's); the fit itself runs on the CPU in float64."""
    method.backbone.to(device)
    method.to(device)
    train = extract_features(method, dm.train_eval_dataloader())
    val_loaders = dm.val_dataloader()
    val = extract_features(method, val_loaders[0]) if val_loaders else None
    log.info("Fitting %s on %d frozen image features", method.name, train[0].shape[0])
    return method.fit_features(train, val)


def named_weights(backbone: FrozenCLIP) -> bool:
    """Weights named by a tag or a checkpoint hash: a reproducible identity that may key a disk cache
    (random weights never are)."""
    identity = backbone.identity()
    return identity.get("pretrained") is not None or identity.get("checkpoint_sha256") is not None


def train_views_for(cfg: DictConfig, method: PromptMethod, world_size: int) -> int:
    """K of ``data.feature_cache.train_views`` when this method can train on cached view features, else 0
    (with a warning saying why the cache is ignored)."""
    views = int(OmegaConf.select(cfg, "data.feature_cache.train_views", default=0) or 0)
    if views == 0:
        return 0
    reason = None
    if not method.trainable or method.fits_on_features:
        reason = "it is not trained by gradient descent on augmented images"
    elif method.touches_image_tower:
        reason = "it prompts the image tower, so image features change during training"
    elif type(method).forward is not PromptMethod.forward:
        reason = "its forward computes more from the images than their features (e.g. frozen-feature targets)"
    elif world_size > 1:
        reason = "the cache is single-process (trainer.devices=1)"
    if reason is not None:
        log.warning("data.feature_cache.train_views=%d is ignored for method %r: %s; training on images.", views,
                    method.name, reason)
        return 0
    return views


def prepare_train_views(method: PromptMethod, dm: PromptDataModule, views: int, device: torch.device) -> None:
    """Encode (or read from the cache) ``views`` augmented views of every training image and make the
    datamodule serve (feature, label) batches. On disk only for named weights with the cache on."""
    method.backbone.to(device)
    method.to(device)
    identity, cache_dir = None, None
    if dm.eval_cache_dir and named_weights(method.backbone):
        identity = {**method.backbone.identity(), "weights_dtype": str(method.backbone.image_dtype())}
        cache_dir = Path(dm.eval_cache_dir).parent / "train_views"
    log.info("Training %s on %d cached augmented views of %d images", method.name, views, len(dm.task.train))
    features, _ = cached_train_views(method.encode_images, identity, dm.task.train, dm.load_image,
                                     dm.train_transform, views, dm.seed, cache_dir, device, dm.eval_batch_size,
                                     dm.num_workers)  # (K, N, D)
    dm.use_train_views(features)


def test_method(trainer: L.Trainer, method: PromptMethod, task: Task, dm: PromptDataModule) -> dict[str, Any]:
    """Accuracy (%) per eval set, plus HM when the task has base and new sets, or the mean over targets.

    Methods that leave the image tower alone are scored from cached frozen image features (one
    process, cache on, weights named by a tag or checkpoint hash -- random weights are never cached):
    the same logits as the image loop, for the cost of the text side."""
    for e in task.evals:
        method.check_classes(e.classes)
    if dm.eval_cache_dir and named_weights(method.backbone) and not method.touches_image_tower and trainer.world_size == 1:
        return summarize(test_from_features(method, task, dm), task.targets)
    module = PromptLearningModule(method.backbone, method, task.train_classes,
                                  [(e.name, e.classes) for e in task.evals])
    trainer.test(module, datamodule=dm, verbose=False)
    return summarize(module.test_results, task.targets)


@torch.no_grad()
def test_from_features(method: PromptMethod, task: Task, dm: PromptDataModule) -> dict[str, float]:
    method.eval()
    device = method.backbone.device
    cache = Path(dm.eval_cache_dir).parent / "image_features"
    accuracies = {}
    for e in task.evals:
        identity = {**method.backbone.identity(), "weights_dtype": str(method.backbone.image_dtype())}
        features = cached_image_features(method.encode_images, identity, e.items,
                                         e.load_image or dm.load_image, dm.eval_transform, cache, device,
                                         dm.eval_batch_size, dm.num_workers)  # (N, D)
        labels = torch.tensor([d.label for d in e.items], device=device)  # (N,)
        text = None if method.conditional_text else method.encode_classes(e.classes)  # (C, D), encoded once
        correct = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: one sync per set
        for f, y in zip(features.split(dm.eval_batch_size), labels.split(dm.eval_batch_size), strict=True):
            correct += (method.forward_features(f, e.classes, text).logits.argmax(-1) == y).sum()
        accuracies[e.name] = 100.0 * int(correct) / max(len(e.items), 1)
    return accuracies


def summarize(accuracies: dict[str, float], targets: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"metrics": {name: {"acc": acc} for name, acc in accuracies.items()}}
    if "base" in accuracies and "new" in accuracies:
        out["hm"] = harmonic_mean(accuracies["base"], accuracies["new"])
    if targets:
        out["target_mean"] = sum(accuracies[t] for t in targets) / len(targets)  # the papers' average column
    return out


NOT_IN_FINGERPRINT = {"paths", "logger", "resume", "skip_done", "objective", "hydra"}
TRAINER_KEYS_NOT_IN_FINGERPRINT = {"enable_progress_bar", "log_every_n_steps",  # how it runs, not what
                                   "compile", "compile_backend"}
DATA_KEYS_NOT_IN_FINGERPRINT = {"num_workers", "root", "eval_cache", "cache_dir"}  # where / how, not what


def computed_settings(cfg: DictConfig) -> dict[str, Any]:
    """Every setting that changes what a run computes (not where it writes or how it logs), flattened."""
    resolved = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NOT_IN_FINGERPRINT}
    resolved["trainer"] = {k: v for k, v in resolved["trainer"].items() if k not in TRAINER_KEYS_NOT_IN_FINGERPRINT}
    resolved["data"] = {k: v for k, v in resolved["data"].items() if k not in DATA_KEYS_NOT_IN_FINGERPRINT}
    if not (resolved["data"].get("feature_cache") or {}).get("train_views"):
        resolved["data"].pop("feature_cache", None)  # off: the fingerprints of runs from before the option stay
    flat: dict[str, Any] = {}
    for group, value in resolved.items():
        if isinstance(value, dict):
            flat.update({f"{group}.{k}": v for k, v in value.items()})
        else:
            flat[group] = value
    return flat


def run_fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resume_checkpoint(cfg: DictConfig, run_dir: Path, settings: dict[str, Any]) -> str | None:
    """``last.ckpt`` of this run directory when resuming is on and it was written by the same settings."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (cfg.resume and last.is_file()):
        return None
    saved = torch.load(last, map_location="cpu", weights_only=False).get("prompt_learning", {})
    if saved.get("fingerprint") != run_fingerprint(settings):
        before = saved.get("settings", {})
        changed = [f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(before) | set(settings))
                   if before.get(k) != settings.get(k)]
        raise RunDirectoryInUse(f"{last} was written with other settings ({'; '.join(changed[:5]) or 'unknown'}), "
                                 f"so it cannot be resumed. Pass resume=false to start over in {run_dir}, or "
                                 f"paths.output_dir=<another dir> to keep both runs.")
    log.info("Resuming from %s", last)
    return str(last)


def train_and_test(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train the configured method (unless it has nothing to learn), test it, write results and export."""
    started, start = datetime.now(UTC), time.time()
    run_dir = Path(cfg.paths.run_dir)
    validate_choices(cfg)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    backbone = build_backbone(cfg)
    task, dm = build_data(cfg, backbone, run_dir)
    method = create_method(OmegaConf.to_container(cfg.method, resolve=True), backbone, task.train_classes)
    check_method_fits_task(method, task, cfg.protocol.name)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    settings = computed_settings(cfg)
    fingerprint = run_fingerprint(settings)
    module = PromptLearningModule(backbone, method, task.train_classes, [(e.name, e.classes) for e in task.evals],
                                  optim, {"fingerprint": fingerprint, "settings": settings})
    trainer = build_trainer(cfg, run_dir, callbacks)
    fit_summary, val_acc = None, None
    views = train_views_for(cfg, method, trainer.world_size)
    fit_start = time.time()
    if method.fits_on_features:
        fit_summary = fit_on_features(method, dm, trainer.strategy.root_device)
        val_acc = fit_summary.get("val_acc")
    elif method.trainable:
        if views:
            prepare_train_views(method, dm, views, trainer.strategy.root_device)
        trainer.fit(module, datamodule=dm, ckpt_path=resume_checkpoint(cfg, run_dir, settings))
        val = trainer.callback_metrics.get("val/acc")
        val_acc = None if val is None else float(val)
    fit_time = time.time() - fit_start
    results = test_method(trainer, method, task, dm)
    zero_shot = None
    if cfg.protocol.eval_zero_shot and method.trainable:
        zero_shot = test_method(trainer, create_method({"name": "zeroshot"}, backbone, task.train_classes), task, dm)
    sgd = method.trainable and not method.fits_on_features
    training = {"epochs": int(cfg.trainer.max_epochs) if sgd else 0, "n_train": len(task.train),
                "shots": int(cfg.shots), "seed": int(cfg.seed), "dataset": cfg.dataset.name,
                **({"train_views": views} if views else {})}
    record = results_record(cfg, method, task, results, zero_shot, fingerprint)
    if not trainer.is_global_zero:  # DDP: every rank computed the same synced metrics; rank 0 writes
        return record
    save_export(run_dir / "export", method, training)  # zero-shot too: its export rebuilds it for inference
    log_export_artifact(trainer, run_dir / "export", cfg)
    if fit_summary is not None:
        record["fit"] = fit_summary
    record["val_acc"] = val_acc  # last epoch's validation accuracy: what sweeps optimise (never test accuracy)
    record["world_size"] = trainer.world_size
    record["train_views"] = views  # K: trained on cached features of K augmented views per image (0: on images)
    record["train_time_s"] = round(fit_time, 2)  # training alone (view encoding included), without testing
    record.update(started_at=started.isoformat(), wall_time_s=round(time.time() - start, 2))
    atomic_write_json(run_dir / "results.json", record)
    return record


def log_export_artifact(trainer: L.Trainer, export_dir: Path, cfg: DictConfig) -> None:
    """With a W&B logger, the export becomes a versioned artifact ``prompts-<method>-<dataset>-<backbone>``
    and the W&B run is finished."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            name = f"prompts-{cfg.method.name}-{cfg.dataset.name}-{cfg.backbone.name}"
            artifact = wandb.Artifact(name, type="prompts", metadata={"shots": int(cfg.shots), "seed": int(cfg.seed),
                                                                      "protocol": cfg.protocol.name})
            artifact.add_dir(str(export_dir))
            logger.experiment.log_artifact(artifact)
            logger.experiment.finish()  # flush now; the next run of a multirun starts its own W&B run


def run_point(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """One run or one point of a sweep, made safe to repeat.

    * ``skip_done`` (default true): a run directory whose results.json carries this config's fingerprint
      is not run again (``status: skipped``);
    * an exception is written to ``<run_dir>/failed.json`` (type, message, traceback) and returned as
      ``status: failed`` instead of stopping the sweep; a later success removes failed.json;
    * a point killed mid-training resumes from its ``last.ckpt`` when launched again (``resume``).
    """
    run_dir = Path(cfg.paths.run_dir)
    done = run_dir / "results.json"
    if cfg.get("skip_done", True) and done.is_file():
        record = json.loads(done.read_text())
        if record.get("fingerprint") == run_fingerprint(computed_settings(cfg)):
            log.warning("Skipping %s: its results.json was written by the same settings (skip_done=false reruns).",
                        run_dir)
            return {"status": "skipped", "run_dir": str(run_dir), "record": record}
    try:
        record = train_and_test(cfg, callbacks)
    except RunDirectoryInUse as exc:  # refused before any work: the directory keeps the other run's files as they are
        return {"status": "failed", "run_dir": str(run_dir), "error": f"{type(exc).__name__}: {exc}", "exception": exc}
    except Exception as exc:
        failure = {"status": "failed", "run_dir": str(run_dir), "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(), "failed_at": datetime.now(UTC).isoformat()}
        atomic_write_json(run_dir / "failed.json", failure)
        failure["exception"] = exc
        return failure
    (run_dir / "failed.json").unlink(missing_ok=True)
    return {"status": "done", "run_dir": str(run_dir), "record": record}


def results_record(cfg: DictConfig, method: PromptMethod, task: Task, results: dict[str, Any],
                   zero_shot: dict[str, Any] | None, fingerprint: str) -> dict[str, Any]:
    """The content of results.json (README, "What a run writes")."""
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "method": method.name,
        "method_config": dataclasses.asdict(method.cfg),
        "backbone": {"name": cfg.backbone.name, **method.backbone.identity()},
        "dataset": cfg.dataset.name, "dataset_info": task.dataset_info, "protocol": cfg.protocol.name,
        "shots": int(cfg.shots), "seed": int(cfg.seed), **results,
        **({"source": cfg.dataset.name, "targets": list(task.targets)} if task.targets else {}),
        "zero_shot": zero_shot, "model_selection": "last_epoch",
        "classes": {"train": len(task.train_classes), **{e.name: len(e.classes) for e in task.evals}},
        "n_train_images": len(task.train), "fingerprint": fingerprint,
        "config": OmegaConf.to_container(cfg, resolve=True), "git_commit": git_commit(), "versions": package_versions(),
    }


def finished_results(run_dir: Path) -> Path:
    """``<run_dir>/results.json``, or a user error when ``run_dir`` is not a finished run."""
    results_path = Path(run_dir).expanduser() / "results.json"
    if not results_path.is_file():
        raise ConfigurationError(f"No results.json in {str(run_dir)!r}; point run_dir at a finished run.")
    return results_path


def evaluate(run_dir: Path, overrides: DictConfig | None = None) -> dict[str, Any]:
    """Re-test a finished run from its export (``scripts/eval.py run_dir=...``); writes ``eval.json``."""
    run_dir = Path(run_dir)
    cfg = OmegaConf.create(json.loads(finished_results(run_dir).read_text())["config"])
    if overrides is not None:
        cfg = OmegaConf.merge(cfg, overrides)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # same random init for pretrained=null backbones
    backbone = build_backbone(cfg)
    task, dm = build_data(cfg, backbone)
    export = run_dir / "export"
    method = (load_method(export, backbone) if export.is_dir()
              else create_method(OmegaConf.to_container(cfg.method, resolve=True), backbone, task.train_classes))
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1,
                        precision=resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
                        logger=False, enable_progress_bar=cfg.trainer.enable_progress_bar, default_root_dir=run_dir)
    record = {"method": method.name, "dataset": cfg.dataset.name, "protocol": cfg.protocol.name,
              **test_method(trainer, method, task, dm), "evaluated_at": datetime.now(UTC).isoformat()}
    atomic_write_json(run_dir / "eval.json", record)
    return record
