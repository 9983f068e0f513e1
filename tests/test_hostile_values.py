"""Hostile values (issue 17, classes 1 and 6): every value is checked when the config is composed, by one
validation layer (``prompt_learning.validation``, the sections' ``RULES``), and refused with one
``ConfigurationError`` naming the key, the value and what the key accepts, before anything is written;
degenerate tasks (one class, zero epochs, no images) are refused with the dataset or the key named.

Fast: one composed config is reused as a plain dict (``RunSpec.from_container``); the command-line tests
go through ``check_overrides`` and ``pl-train``'s ``main`` in this process."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from prompt_learning.config import check_overrides, compose_config
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import ConfigurationError, DataError
from prompt_learning.protocols import get_protocol
from prompt_learning.run_spec import RunSpec


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    """The default training config, resolved, as the spec receives it."""
    return OmegaConf.to_container(compose_config(["backbone=tiny_test"]), resolve=True)  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def keep_warning_hooks():
    """``pl-train``'s main installs the one-line warning format: put Python's back afterwards."""
    hooks = warnings.showwarning, warnings.formatwarning
    yield
    warnings.showwarning, warnings.formatwarning = hooks


def with_values(base: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``base`` with dotted keys replaced: ``with_values(base, **{"optim.lr": -1})``."""
    container = copy.deepcopy(base)
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = container
        for part in parents:
            node = node[part]
        node[leaf] = value
    return container


def refused(container: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationError) as info:
        RunSpec.from_container(container)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


# ------------------------------------------------------------------------------- class 1: shots and seed


def train_main(args: list[str], tmp_path: Path, monkeypatch, capsys) -> tuple[int, str]:
    """``pl-train args`` in this process from ``tmp_path``; its exit status and stderr."""
    from prompt_learning.cli import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PL_OUTPUT_DIR", str(tmp_path / "outputs"))
    with pytest.raises(SystemExit) as exit_:
        train.main(args)
    return int(exit_.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("shots", ["0", "-2"])
def test_shots_that_mean_nothing_are_refused_before_any_directory(shots: str, tmp_path: Path, monkeypatch,
                                                                    capsys) -> None:
    status, err = train_main([f"shots={shots}", "trainer.enable_progress_bar=false"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "Traceback" not in err
    assert (f"error: shots={shots} is not valid; use -1 (every training image) or an integer >= 1 (training "
            f"images per class).") in err
    assert list(tmp_path.iterdir()) == []  # no shots_0/ (nor anything else) on disk


def test_shots_minus_one_stays_all_images(base) -> None:
    assert RunSpec.from_container(with_values(base, shots=-1)).shots == -1


@pytest.mark.parametrize("key,value,expected", [
    ("shots", 2.5, "shots=2.5 is not valid; use -1 (every training image) or an integer >= 1"),
    ("shots", "4", "shots='4' is not valid; use -1 (every training image) or an integer >= 1"),
    ("seed", 1.5, "seed=1.5 is not valid; use an integer from 0 to 4294967295"),
    ("seed", True, "seed=true is not valid; use an integer from 0 to 4294967295"),
    ("seed", -1, "seed=-1 is not valid; use an integer from 0 to 4294967295"),
    ("seed", 2**32, "seed=4294967296 is not valid; use an integer from 0 to 4294967295"),
])
def test_shots_and_seed_are_typed_integers_in_range(base, key: str, value: Any, expected: str) -> None:
    assert expected in refused(with_values(base, **{key: value}))  # never truncated, never a numpy traceback


def test_every_problem_is_listed_in_one_error(base) -> None:
    message = refused(with_values(base, shots=0, seed=-1, **{"optim.lr": -0.1}))
    assert message.startswith("3 invalid config values: (1) seed=-1") and "shots=0" in message
    assert "optim.lr=-0.1 is not valid; use a number > 0." in message


# ----------------------------------------------------------------------- class 1: the campaign, by group


@pytest.mark.parametrize("values,expected", [
    ({"optim.lr": -0.002}, "optim.lr=-0.002 is not valid; use a number > 0."),
    ({"optim.momentum": 1.5}, "optim.momentum=1.5 is not valid; use a number >= 0 and < 1."),
    ({"trainer.devices": 0}, "trainer.devices=0 is not valid; use a number of devices >= 1, -1 (all)"),
    ({"trainer.accelerator": "gpus"}, "trainer.accelerator='gpus' is not valid; use one of ['auto', 'cpu', "
                                      "'gpu', 'cuda', 'mps', 'tpu']. Did you mean 'gpu'"),
    ({"trainer.max_epochs": -1}, "trainer.max_epochs=-1 is not valid; use an integer >= 0."),
    ({"trainer.strategy": "dpp"}, "trainer.strategy='dpp' is not valid; use auto or a strategy Lightning registers "
                                  "(ddp, ddp_spawn, fsdp, deepspeed, ...). Did you mean 'ddp'"),
    ({"trainer.precision": "16"}, "trainer.precision='16' is not valid; use one of ['auto', '32-true'"),
    ({"data.batch_size": 0}, "data.batch_size=0 is not valid; use an integer >= 1."),
    ({"data.num_workers": -1}, "data.num_workers=-1 is not valid; use an integer >= 0"),
    ({"backbone.model": "???"}, "backbone.model='???' is not valid; use an open_clip architecture"),
    ({"resume": "no"}, "resume='no' is not valid; use true or false."),
    ({"dataset.split_fractions": [0.9, 0.2]}, "dataset.split_fractions=[0.9, 0.2] is not valid; use [train, val]"),
    ({"dataset.template": "a photo"}, "dataset.template='a photo' is not valid; use null or a text with exactly "
                                      "one '{}'"),
    ({"protocol.name": "b2n"}, "protocol.name='b2n' is not valid; use one of"),
    ({"objective": "val_accuracy"}, "objective='val_accuracy' is not valid; use one of ['val_acc', "),
])
def test_campaign_group_values(base, values: dict[str, Any], expected: str) -> None:
    assert expected in refused(with_values(base, **values))


@pytest.mark.parametrize("method,values,expected", [
    ("coop", {"n_ctx": 0}, "method.n_ctx=0"),
    ("coop", {"init_std": -0.02}, "method.init_std=-0.02 is not valid; use a number >= 0."),
    ("kgcoop", {"weight": -8.0}, "method.weight=-8.0 is not valid; use a number >= 0."),
    ("prograd", {"lambda_": 1.5}, "method.lambda_=1.5 is not valid; use a number from 0 to 1."),
    ("zeroshot", {"templates": ["imagenet_80"]}, "method.templates=['imagenet_80'] is not valid; use a non-empty "
                                                  "list of templates"),
    ("promptsrc", {"gpa_std": 0.0}, "method.gpa_std=0.0 is not valid; use a number > 0."),
    ("coop", {"n_ctxx": 4}, "Unknown config key(s) ['method.n_ctxx']. Did you mean method.n_ctx?"),
])
def test_campaign_method_values(base, method: str, values: dict[str, Any], expected: str) -> None:
    container = with_values(base, method={"name": method, **values})
    assert expected in refused(container)


def test_the_strategy_list_is_lightnings() -> None:
    from lightning.pytorch.strategies import StrategyRegistry

    from prompt_learning.run_spec import LIGHTNING_STRATEGIES

    assert sorted(LIGHTNING_STRATEGIES) == sorted(["auto", *StrategyRegistry.available_strategies()])


def test_protocol_targets_must_mean_something(base) -> None:
    few_shot = with_values(base, protocol={"name": "few_shot", "eval_zero_shot": True, "targets": ["dtd"]})
    assert "protocol.targets=['dtd'] is not valid; use [] with this protocol" in refused(few_shot)
    transfer = with_values(base, protocol={"name": "cross_dataset", "eval_zero_shot": True, "targets": []})
    assert "protocol.targets=[] is not valid; use a non-empty list of datasets" in refused(transfer)
    typo = with_values(base, protocol={"name": "cross_dataset", "eval_zero_shot": True, "targets": ["eurosatt"]})
    assert "protocol.targets[0]='eurosatt' is not valid" in refused(typo) and "Did you mean 'eurosat'" in refused(typo)


def test_single_run_values_are_refused_before_hydra(tmp_path: Path, monkeypatch, capsys) -> None:
    status, err = train_main(["logger.name=tensorbord", "data.batch_size=0"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "error: data.batch_size=0 is not valid; use an integer >= 1." in err
    assert list(tmp_path.iterdir()) == []


def test_multirun_with_every_point_invalid_runs_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    status, err = train_main(["-m", "seed=-1,-2"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "Every point of this multirun is invalid, so nothing was run" in err
    assert "seed=-1 is not valid" in err and "seed=-2 is not valid" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_multirun_with_some_invalid_points_names_them_and_runs() -> None:
    with pytest.warns(UserWarning, match=r"1 swept value\(s\) give invalid points.*seed=-1: seed=-1 is not valid"):
        check_overrides(["seed=1,-1"])


def test_optuna_preset_objective_must_be_a_results_key() -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with pytest.raises(ConfigurationError, match=r"Every point.*objective='val_accuracy' is not valid; use one of "
                                                 r"\['val_acc'"):
        check_overrides(["sweep=optuna_coop", "objective=val_accuracy"])


# -------------------------------------------------------------------------- class 6: degenerate tasks


def test_zero_epochs_are_refused_for_a_method_trained_by_sgd(base) -> None:
    message = refused(with_values(base, **{"trainer.max_epochs": 0}))
    assert message.startswith("trainer.max_epochs=0 is not valid; use an integer >= 1.")
    assert "'coop' is trained by gradient descent" in message and "method=zeroshot" in message
    zero_shot = with_values(base, method={"name": "zeroshot"}, **{"trainer.max_epochs": 0})
    assert RunSpec.from_container(zero_shot).trainer.max_epochs == 0  # nothing to train: 0 epochs is what it does


def splits_of(classnames: tuple[str, ...]) -> DatasetSplits:
    items = [Datum(f"{c}/{i}.jpg", label, c) for label, c in enumerate(classnames) for i in range(4)]
    return DatasetSplits("my_folder", items, items, items, classnames, "a photo of a {}.", load_image=None)


@pytest.mark.parametrize("protocol,classes,minimum", [("few_shot", ("cat",), 2), ("base2new", ("cat", "dog", "owl"), 4)])
def test_tasks_with_too_few_classes_are_refused(protocol: str, classes: tuple[str, ...], minimum: int) -> None:
    with pytest.raises(ConfigurationError, match=rf"Dataset 'my_folder' has {len(classes)} class.*'cat'.*"
                                                 rf"protocol={protocol} needs at least {minimum}"):
        get_protocol(protocol).build_task(splits_of(classes), shots=2, seed=1)
    assert len(get_protocol(protocol).build_task(splits_of(("a", "b", "c", "d")), 2, 1).train_classes) >= 2


def test_predict_refuses_an_empty_image_list() -> None:
    from prompt_learning.export.predict import predict_files

    with pytest.raises(DataError, match="No images to classify"):
        predict_files(None, [], ["cat", "dog"])  # type: ignore[arg-type]  (refused before the model is used)
    with pytest.raises(ConfigurationError, match="top_k=0"):
        predict_files(None, [Path("a.jpg")], ["cat", "dog"], top_k=0)  # type: ignore[arg-type]


def test_prompted_clip_refuses_an_empty_image_list(tiny_backbone, tmp_path: Path) -> None:
    """The library API, like predict_files: an empty list is a clear DataError, not torch's stack error."""
    from prompt_learning.errors import DataError
    from prompt_learning.export import PromptedCLIP
    from prompt_learning.methods import create_method
    from prompt_learning.prompts import ClassSet

    classes = ClassSet(("cat", "dog"), "a photo of a {}.")
    model = PromptedCLIP(create_method({"name": "zeroshot"}, tiny_backbone, classes), "a photo of a {}.")
    with pytest.raises(DataError, match="image list is empty"):
        model.predict([], ["cat", "dog"])
