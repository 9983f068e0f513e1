"""The Hydra-facing entry of the engine: a composed ``DictConfig`` becomes a typed :class:`RunSpec` here,
once, and everything below takes the spec's sections.

``train_and_test(cfg)`` is what ``scripts/train.py`` (through ``run_point``) and the tests call;
``evaluate(run_dir)`` re-tests a finished run from its export. The other functions take either a
``DictConfig`` or a ``RunSpec``, for scripts and tests that build one piece at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.engine import bookkeeping, builders, orchestrate, setup, stages
from prompt_learning.engine.bookkeeping import finished_results, run_fingerprint
from prompt_learning.engine.datamodule import PromptDataModule
from prompt_learning.engine.evaluation import evaluate_method
from prompt_learning.engine.setup import resolve_precision
from prompt_learning.formats import FormatError, load_json_file
from prompt_learning.methods import PromptMethod
from prompt_learning.protocols import Task
from prompt_learning.run_spec import RunSpec

__all__ = ["build_backbone", "build_data", "compile_mode", "computed_settings", "evaluate", "evaluate_method",
           "finished_results", "resolve_precision", "run_fingerprint", "run_point", "to_spec", "train_and_test",
           "train_views_for", "validate_choices"]


def to_spec(cfg: DictConfig | RunSpec) -> RunSpec:
    """The typed spec of a composed config (validated: plugins imported, the method's config built)."""
    if isinstance(cfg, RunSpec):
        return cfg
    return RunSpec.from_container(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


def train_and_test(cfg: DictConfig | RunSpec, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train the configured method (unless it has nothing to learn), test it, write results and export."""
    return orchestrate.train_and_test(to_spec(cfg), callbacks)


def run_point(cfg: DictConfig | RunSpec, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """One run or one point of a sweep, made safe to repeat (see ``orchestrate.run_point``)."""
    if isinstance(cfg, RunSpec):
        return orchestrate.run_point(cfg.container, callbacks, lambda _: cfg)
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # e.g. an interpolation that does not resolve: a failed point, as before
        run_dir = OmegaConf.select(cfg, "paths.run_dir", default=None, throw_on_resolution_failure=False)
        if run_dir is None:
            raise
        return orchestrate.record_failure(Path(str(run_dir)), exc)
    return orchestrate.run_point(container, callbacks)  # type: ignore[arg-type]


def evaluate(run_dir: Path, overrides: DictConfig | None = None) -> dict[str, Any]:
    """Re-test a finished run from its export (``scripts/eval.py run_dir=...``); writes ``eval.json``."""
    run_dir = Path(run_dir)
    record = load_json_file(finished_results(run_dir), "results file", "Run the training again (skip_done=false).")
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise FormatError(f"{run_dir / 'results.json'} has no 'config' object: it was not written by a finished run "
                          f"of this package. Run the training again (skip_done=false).")
    cfg = OmegaConf.create(record["config"])
    if overrides is not None:
        cfg = OmegaConf.merge(cfg, overrides)
    return orchestrate.retest(to_spec(cfg), run_dir)


def validate_choices(cfg: DictConfig | RunSpec) -> None:
    setup.validate_choices(to_spec(cfg))


def compile_mode(cfg: DictConfig | RunSpec) -> str | None:
    return setup.compile_mode(to_spec(cfg).trainer)


def computed_settings(cfg: DictConfig | RunSpec) -> dict[str, Any]:
    return bookkeeping.computed_settings(to_spec(cfg).container)


def build_backbone(cfg: DictConfig | RunSpec) -> FrozenCLIP:
    return setup.build_backbone(to_spec(cfg))


def build_data(cfg: DictConfig | RunSpec, backbone: FrozenCLIP, run_dir: Path | None = None
               ) -> tuple[Task, PromptDataModule]:
    return builders.build_data(to_spec(cfg), backbone, run_dir)


def train_views_for(cfg: DictConfig | RunSpec, method: PromptMethod, world_size: int) -> int:
    return stages.train_views_for(to_spec(cfg).data.feature_cache.train_views, method, world_size)
