"""Shared fixtures: tiny random-weight backbones (built once per session) and config composition."""

from __future__ import annotations

import dataclasses
import logging
import os
import runpy
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: fail fast instead of retrying downloads
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("PL_CACHE_DIR", tempfile.mkdtemp(prefix="pl-test-cache-"))  # decoded eval images
os.environ.setdefault("WANDB_SILENT", "true")
warnings.filterwarnings("ignore", message=".*No pretrained weights loaded.*")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of the suite's worker processes: one core each, no oversubscription
    torch.set_num_threads(1)

from prompt_learning.backbone import FrozenCLIP  # noqa: E402
from prompt_learning.config import compose_config  # noqa: E402
from prompt_learning.prompts import ClassSet  # noqa: E402

CLASSES = ClassSet(("red star", "blue ring", "green cross", "yellow crescent moon"), "a photo of a {}.")
UNSEEN = ClassSet(("purple square", "orange diamond", "pink circle"), "a photo of a {}.")


@pytest.fixture(scope="session")
def tiny_backbone() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("tiny_test")


@pytest.fixture(scope="session")
def custom_text_backbone() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("tiny_test_custom_text")


@pytest.fixture(scope="session")
def vit_b16() -> FrozenCLIP:
    """Full-size ViT-B/16 with random weights (pretrained=None): real widths, depths and counts."""
    return FrozenCLIP("ViT-B-16", None)


def teacher_keys(name: str, teacher: dict[str, str]) -> dict[str, str]:
    """``teacher`` (the :func:`kd_teacher` keys) for a method that distils a teacher (its config has
    ``teacher_export``: PromptKD), else nothing: what building the method ``name`` in a test needs."""
    from prompt_learning.methods import list_methods

    return teacher if "teacher_export" in {f.name for f in dataclasses.fields(list_methods()[name].Config)} else {}


@pytest.fixture(scope="session")
def kd_teacher(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A PromptKD teacher: an IVLP export on ``tiny_test_wide`` (a wider tower, joint dim 48, the tiny students'
    input size) whose random weights sit in a checkpoint file, so that every load gives the same teacher. Returns
    the method config keys that point a student at it."""
    from safetensors.torch import save_file

    from prompt_learning.export import save_export
    from prompt_learning.methods import create_method

    where = tmp_path_factory.mktemp("kd_teacher")
    torch.manual_seed(11)
    weights = where / "tiny_test_wide.safetensors"
    save_file({k: v.contiguous() for k, v in FrozenCLIP("tiny_test_wide").model.state_dict().items()}, str(weights))
    teacher = create_method({"name": "ivlp", "n_ctx_text": 2, "n_ctx_vision": 2, "depth_text": 2, "depth_vision": 2},
                            FrozenCLIP("tiny_test_wide", str(weights)), CLASSES)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_export(where / "export", teacher, {"epochs": 1})
    return {"teacher_export": str(where / "export"), "teacher_checkpoint": str(weights)}


@pytest.fixture
def images(tiny_backbone: FrozenCLIP) -> torch.Tensor:
    return torch.randn(3, 3, tiny_backbone.image_size, tiny_backbone.image_size, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def run_cfg(tmp_path):
    """Compose the training config with fast test settings on top of the given overrides."""

    def make(*overrides: str):
        return compose_config(["backbone=tiny_test", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                               "shots=2", "logger=none", "dataset.test_per_class=2", "dataset.val_per_class=1",
                               f"paths.output_dir={tmp_path}", *overrides])

    return make


TRAIN_SCRIPT = Path(__file__).parents[1] / "scripts" / "train.py"


@pytest.fixture
def train_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``scripts/train.py <argv>`` run in this process exactly as its command line runs it (override checks,
    Hydra, multirun launcher and callbacks), without paying a new interpreter's imports; returns
    ``(exit status, stdout, stderr)``."""
    from hydra.core.global_hydra import GlobalHydra

    def run(*argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", [str(TRAIN_SCRIPT), *argv])
        GlobalHydra.instance().clear()
        try:
            runpy.run_path(str(TRAIN_SCRIPT), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def keep_logging():
    """Hydra configures logging when it runs an app: put the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
