"""Set-up: every choice checked before work starts, the frozen backbone, and the Lightning Trainer."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.backbone.towers import COMPILE_MODES
from prompt_learning.engine.checkpoint_io import AtomicCheckpointIO
from prompt_learning.engine.loggers import check_callbacks_config, check_logger_config
from prompt_learning.engine.progress import run_progress_bar
from prompt_learning.errors import ConfigurationError
from prompt_learning.progress import Progress
from prompt_learning.run_spec import RunSpec, TrainerConfig

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

def validate_choices(spec: RunSpec) -> None:
    """What the spec cannot check by itself, before any model or data is loaded: the logger and callback
    classes, and what this machine offers (a CUDA GPU, a compiler for ``trainer.compile``). Every value,
    its type, range and choices, was checked when the spec was made (``RunSpec.from_container``,
    docs/validation.md)."""
    check_logger_config(spec.logger)
    check_callbacks_config(spec.callbacks)
    if spec.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"trainer.accelerator={spec.trainer.accelerator!r} but no CUDA GPU is visible "
                                 f"here; use trainer=cpu (or trainer=default, which picks what is available).")
    compile_mode(spec.trainer)


def compile_mode(trainer: TrainerConfig) -> str | None:
    """``trainer.compile`` checked: None (off) or a torch.compile mode (``true`` means ``default``); the backend
    must be one torch knows, and inductor on a CPU needs a C++ compiler, which is checked here, not at step 1."""
    mode = trainer.compile
    if mode is None or str(mode).lower() in ("false", "none", "null", "off"):
        return None
    mode = "default" if str(mode).lower() == "true" else str(mode)
    if mode not in COMPILE_MODES:
        raise ConfigurationError(f"trainer.compile={mode!r} is not a valid choice; use null (off) or one of "
                                 f"{list(COMPILE_MODES)}.")
    backend = str(trainer.compile_backend)
    import torch._dynamo  # only when compiling

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ConfigurationError(f"trainer.compile_backend={backend!r} is not a torch.compile backend; use one of "
                                 f"{sorted(known)}.")
    on_cpu = trainer.accelerator == "cpu" or not torch.cuda.is_available()
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


def build_backbone(spec: RunSpec) -> FrozenCLIP:
    b = spec.backbone
    weights = Path(str(b.pretrained)).name if b.pretrained else "random"  # a tag, or a checkpoint's file name
    with Progress(f"Loading backbone {b.model} ({weights} weights)"):
        backbone = FrozenCLIP(b.model, b.pretrained, precision=b.precision, cache_dir=b.cache_dir,
                              quick_gelu=b.quick_gelu)
    mode = compile_mode(spec.trainer)
    if mode is not None:
        backbone.compile_towers(mode, str(spec.trainer.compile_backend))
    return backbone


def build_trainer(spec: RunSpec, run_dir: Path, callbacks: Sequence[Callback] = (), loggers: Sequence[Logger] = (),
                  inference_mode: bool = True) -> L.Trainer:
    """The Trainer for fit and test. ``inference_mode=False`` for test-time-adaptive methods, which need
    gradients while they are evaluated."""
    t = spec.trainer
    # Saved after the method's epoch-end hook (e.g. PromptSRC's prompt aggregation), so a resume sees its state.
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=1,
                                 save_on_train_epoch_end=True)
    # The datamodule shards every split itself (no padding duplicates in evaluation), hence no distributed sampler.
    return L.Trainer(accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, use_distributed_sampler=False,
                     precision=resolve_precision(t.precision, t.accelerator), max_epochs=t.max_epochs,
                     log_every_n_steps=t.log_every_n_steps, check_val_every_n_epoch=t.check_val_every_n_epoch,
                     enable_progress_bar=t.enable_progress_bar, num_sanity_val_steps=t.num_sanity_val_steps,
                     default_root_dir=run_dir, logger=list(loggers) or False, inference_mode=inference_mode,
                     callbacks=[checkpoint, *callbacks, *run_progress_bar(t.enable_progress_bar, callbacks)],
                     plugins=[AtomicCheckpointIO()],  # a kill or a full disk never leaves a truncated checkpoint
                     enable_model_summary=False)


def evaluation_trainer(spec: RunSpec, run_dir: Path, inference_mode: bool = True) -> L.Trainer:
    """A one-device Trainer for re-testing a finished run (``scripts/eval.py``)."""
    t = spec.trainer
    return L.Trainer(accelerator=t.accelerator, devices=1, precision=resolve_precision(t.precision, t.accelerator),
                     logger=False, enable_progress_bar=t.enable_progress_bar, default_root_dir=run_dir,
                     inference_mode=inference_mode, callbacks=run_progress_bar(t.enable_progress_bar))
