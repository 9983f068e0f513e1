"""Compose ``configs/`` without ``@hydra.main`` (demo, tests) and report user errors without tracebacks."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from prompt_learning.config.schema import register_configs
from prompt_learning.errors import PromptLearningError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose_config(overrides: Sequence[str] = (), config_name: str = "train", config_dir: Path = CONFIG_DIR
                   ) -> DictConfig:
    """The config ``scripts/train.py`` would run with these command-line overrides."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a ``PromptLearningError`` into one line on stderr and exit status 2 (no traceback)."""
    try:
        yield
    except PromptLearningError as exc:
        logging.getLogger("prompt_learning").debug("user error", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
