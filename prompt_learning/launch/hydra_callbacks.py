"""Hydra callbacks of a multirun: a summary of its points, the paper table of its results (``sweep=<name>``
presets) and the best Optuna trial as an experiment preset."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from prompt_learning.config.run_dirs import SWEEP_ID_ENV, sweep_id
from prompt_learning.errors import PromptLearningError
from prompt_learning.formats import FormatError, load_json_file
from prompt_learning.results import aggregate, load_results, print_summary, write_outputs

log = logging.getLogger(__name__)


def failure_message(path: Path) -> str | None:
    """The ``error`` of a failed.json, or what is wrong with the file when it cannot be read."""
    try:
        failure = load_json_file(path, "failure record")
    except (FormatError, OSError) as exc:
        return f"(unreadable failed.json: {exc})"
    return failure.get("error") if isinstance(failure, dict) else f"(failed.json is not a JSON object: {path})"


def sweep_id_of(config: Any) -> str:
    """The id of the multirun ``config`` describes (its command and sweeper parameters), see run_dirs."""
    from omegaconf import OmegaConf

    params = config.hydra.sweeper.get("params") or {}
    return sweep_id(str(config.hydra.job.config_name), [str(o) for o in config.hydra.overrides.task],
                    OmegaConf.to_container(params, resolve=False) if not isinstance(params, dict) else params)


def quiet_optuna() -> None:
    """Optuna's own handler colours its lines with ANSI codes whether or not the output is a terminal; hand
    its messages to the sweep's log format instead, and keep the storage's schema migrations (alembic) quiet."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    logging.getLogger("alembic").setLevel(logging.WARNING)


class AggregateAfterMultirun(Callback):
    """Once all jobs of a multirun have finished, aggregate the results.json files under ``results_dir``
    that belong to this sweep (their ``sweeps`` field holds its id) into ``<sweep dir>/aggregate`` and print
    the table. Other runs under the same root (other sweeps, single runs) are left out."""

    def __init__(self, results_dir: str, plots: bool = True) -> None:
        self.results_dir, self.plots = Path(results_dir), plots

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sid = sweep_id_of(config)
        try:
            records = [r for r in load_results(self.results_dir) if sid in r.get("sweeps", [])]
            if not records:
                raise PromptLearningError(f"no results.json of sweep {sid} under {self.results_dir}")
            agg = aggregate(records)
            written = write_outputs(agg, Path(str(config.hydra.sweep.dir)) / "aggregate", plots=self.plots)
        except PromptLearningError as exc:  # e.g. every job failed: say so instead of a traceback
            print(f"aggregation skipped: {exc}")
            return
        print(f"sweep {sid}: {len(records)} runs")
        print_summary(agg)
        print("wrote " + ", ".join(map(str, written)))


class SweepSummary(Callback):
    """Counts the points of a multirun (done / skipped / failed, from ``run_point``'s status) and ends
    the sweep with a summary and exit status 1 when any point failed."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.started = 0.0
        self.previous_id: str | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """Name the sweep before its directory and its points' configs are resolved (``PL_SWEEP_ID``, read by
        ``hydra.sweep.dir`` and the points' ``sweep_id``); launchers that run points in other processes
        pass the environment on."""
        self.started = time.time()
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower():
            quiet_optuna()
        self.previous_id = os.environ.get(SWEEP_ID_ENV)
        os.environ[SWEEP_ID_ENV] = sweep_id_of(config)

    def _from_files(self, config: Any) -> list[dict[str, Any]]:
        """Launchers that run jobs in other processes (submitit) end their jobs there: count the
        results.json / failed.json files this sweep wrote instead."""
        root = Path(str(config.paths.output_dir))
        found = []
        for name, status in (("results.json", "done"), ("failed.json", "failed")):
            for path in root.rglob(name):
                if path.stat().st_mtime >= self.started:
                    error = failure_message(path) if status == "failed" else None
                    found.append({"status": status, "run_dir": str(path.parent), "error": error})
        return found

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        try:
            value = job_return.return_value
        except Exception as exc:  # an error that escaped run_point
            value = {"status": "failed", "run_dir": "?", "error": f"{type(exc).__name__}: {exc}"}
        self.statuses.append(value if isinstance(value, dict) else {"status": "done", "run_dir": "?"})

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self.previous_id is None:
            os.environ.pop(SWEEP_ID_ENV, None)
        else:
            os.environ[SWEEP_ID_ENV] = self.previous_id
        if not self.statuses:
            self.statuses = self._from_files(config)
        counts = {s: sum(1 for v in self.statuses if v.get("status") == s) for s in ("done", "skipped", "failed")}
        print(f"sweep: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
        for v in self.statuses:
            if v.get("status") == "failed":
                where = Path(str(v.get("run_dir"))) / "failed.json"
                details = "  (details in failed.json)" if where.is_file() else ""  # a refused point writes none
                print(f"  failed: {v.get('run_dir')}: {v.get('error')}{details}")
        if counts["failed"]:
            raise SystemExit(1)


def nested(params: dict[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 0.01} -> {"optim": {"lr": 0.01}}."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


class WriteBestPreset(Callback):
    """Optuna sweeps: create the SQLite study's folder first; afterwards, write the best trial as an
    experiment preset (``# @package _global_``) that ``experiment=`` loads once copied into
    ``configs/experiment/``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        storage = str(config.hydra.sweeper.get("storage") or "")
        if storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        import yaml

        from prompt_learning.files import atomic_write_bytes

        results = Path(config.hydra.sweep.dir) / "optimization_results.yaml"
        if not results.is_file():
            print(f"no {results}: nothing to write")
            return
        best = yaml.safe_load(results.read_text())
        header = (f"# @package _global_\n# Best trial of the Optuna study {config.hydra.sweeper.study_name!r} "
                  f"({config.get('objective')} = {best['best_value']}); copy into configs/experiment/ to use as "
                  f"experiment=<name>.\n")
        atomic_write_bytes(self.path, (header + yaml.safe_dump(nested(best["best_params"]), sort_keys=True)).encode())
        print(f"best: {best['best_params']} ({config.get('objective')} = {best['best_value']}) -> {self.path}")
