"""Every config composes; unknown names, misspelt keys and wrong types fail with errors naming them."""

from __future__ import annotations

import shutil

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from prompt_learning.config import CONFIG_DIR, check_overrides, compose_config
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import list_methods

GROUP_OPTIONS = [(g.name, f.stem) for g in sorted(CONFIG_DIR.iterdir())
                 if g.is_dir() and g.name not in ("hydra", "paths") for f in sorted(g.rglob("*.yaml"))]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_option_composes(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"])
    assert cfg.paths.run_dir.endswith(f"shots_{cfg.shots}/seed_{cfg.seed}")


def test_every_method_has_a_config() -> None:
    assert {f.stem for f in (CONFIG_DIR / "method").glob("*.yaml")} == set(list_methods())


def test_eval_config_composes() -> None:
    assert compose_config(["run_dir=/tmp/x"], config_name="eval").run_dir == "/tmp/x"


def test_overrides_reach_the_method() -> None:
    cfg = compose_config(["method.n_ctx=4", "method.class_token_position=middle", "shots=4", "seed=2"])
    assert (cfg.method.n_ctx, cfg.method.class_token_position, cfg.shots, cfg.seed) == (4, "middle", 4, 2)
    assert cfg.paths.run_dir.endswith("base2new/synthetic/coop/tiny_synthetic/shots_4/seed_2")


def test_unknown_option_lists_choices() -> None:
    with pytest.raises(MissingConfigException) as info:
        compose_config(["method=coopp"])
    assert "method/coopp" in str(info.value) and "coop" in str(info.value) and "zeroshot" in str(info.value)


def test_misspelt_key_is_named(tmp_path) -> None:
    with pytest.raises(ConfigCompositionException, match="n_ctxx"):
        compose_config(["method.n_ctxx=3"])
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    with open(configs / "method" / "coop.yaml", "a") as f:
        f.write("n_ctxx: 3\n")  # a typo inside a group file is caught by the method's schema
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(config_dir=configs)
    assert "Key 'n_ctxx' not in 'CoOpConfig'" in str(info.value.__cause__ or info.value)


def test_wrong_type_is_named() -> None:
    with pytest.raises((ConfigCompositionException, ValidationError), match="n_ctx"):
        compose_config(["method.n_ctx=many"])


def test_folder_runs_of_different_roots_get_different_directories() -> None:
    pets = compose_config(["dataset=folder", "dataset.root=/data/pets"]).paths.run_dir
    cars = compose_config(["dataset=folder", "dataset.root=/data/cars"]).paths.run_dir
    assert "/folder-pets/" in pets and "/folder-cars/" in cars


def test_misspelt_cli_key_names_close_matches_and_valid_keys() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_overrides(["method=coop", "method.n_ctxx=4", "seed=1,2"])
    message = str(info.value)
    assert "'method.n_ctxx'" in message and "method.n_ctx" in message and "class_token_position" in message
    check_overrides(["method=zeroshot", "method.templates=[ensemble]", "+extra=1", "-m"])  # valid: no error
    with pytest.raises(ConfigurationError, match="optim.lrr.*optim.lr"):
        check_overrides(["optim.lrr=0.1"])
