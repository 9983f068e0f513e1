"""Every config composes; unknown names, misspelt keys and wrong types fail with errors naming them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from prompt_learning.config import CONFIG_DIR, check_overrides, compose_config
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import list_methods

GROUP_OPTIONS = [(g.name, f.relative_to(g).with_suffix("").as_posix()) for g in sorted(CONFIG_DIR.iterdir())
                 if g.is_dir() and g.name not in ("hydra", "paths") for f in sorted(g.rglob("*.yaml"))]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_option_composes(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"])
    assert re.search(rf"shots_{cfg.shots}/seed_{cfg.seed}-[0-9a-f]{{8}}$", cfg.paths.run_dir)


def test_every_method_has_a_config() -> None:
    assert {f.stem for f in (CONFIG_DIR / "method").glob("*.yaml")} == set(list_methods())


def test_every_method_has_experiment_presets() -> None:
    experiments = CONFIG_DIR / "experiment"
    protocols_of = {"linear_probe": ("few_shot",), "tip_adapter": ("few_shot", "base2new"),
                    "tip_adapter_f": ("few_shot", "base2new"), "tpt": ("base2new", "cross_dataset", "domain_gen"),
                    "upl": ("few_shot", "few_shot_star", "base2new", "cross_dataset", "synthetic_star"),
                    "promptkd": ("base2new", "cross_dataset"), "proda": ("few_shot", "base2new"),
                    "rpo": ("base2new", "domain_gen"), "gopro": ("base2new", "cross_dataset"),
                    "mocoop": ("base2new", "base2new_b32", "few_shot", "cross_dataset")}
    for method in set(list_methods()) - {"zeroshot"}:
        settings = protocols_of.get(method, ("base2new", "few_shot", "cross_dataset"))
        for setting in settings:
            assert (experiments / method / f"{setting}.yaml").is_file(), f"missing experiment={method}/{setting}"


@pytest.mark.parametrize("preset,expected", [
    ("maple/cross_dataset", {"method.name": "maple", "method.depth": 3, "optim.lr": 0.0026, "trainer.max_epochs": 2,
                             "data.batch_size": 4, "protocol.name": "cross_dataset", "dataset.name": "imagenet",
                             "shots": 16}),
    ("maple/base2new", {"method.depth": 9, "optim.lr": 0.0035, "trainer.max_epochs": 5, "data.batch_size": 4,
                        "protocol.name": "base2new", "backbone.name": "vit_b16"}),
    ("promptsrc/base2new", {"method.gpa_mean": 15.0, "method.gpa_std": 1.0, "trainer.max_epochs": 20,
                            "optim.lr": 0.0025, "data.batch_size": 4}),
    ("promptsrc/few_shot", {"method.gpa_mean": 30.0, "method.gpa_std": 30.0, "trainer.max_epochs": 50}),
    ("promptsrc/cross_dataset", {"method.depth_text": 3, "method.depth_vision": 3, "method.gpa_mean": 6.0,
                                 "method.gpa_std": 10.0, "trainer.max_epochs": 20}),
    ("kgcoop/base2new", {"data.batch_size": 128, "method.weight": 8.0, "trainer.max_epochs": 100, "optim.lr": 0.002}),
    ("cocoop/base2new", {"data.batch_size": 1, "trainer.max_epochs": 10, "method.n_ctx": 4}),
    ("coop/base2new", {"method.ctx_init": "a photo of a", "trainer.max_epochs": 200, "data.batch_size": 32}),
    ("coop/few_shot", {"method.n_ctx": 16, "method.ctx_init": "", "trainer.max_epochs": 200}),
    ("upl/few_shot", {"method.name": "upl", "method.n_ctx": 16, "method.ctx_init": "", "backbone.model": "RN50",
                      "optim.lr": 0.002, "trainer.max_epochs": 50, "data.batch_size": 32, "shots": 16}),
    ("upl/synthetic_star", {"method.name": "upl", "backbone.model": "tiny_synthetic_small", "dataset.name": "synthetic",
                            "protocol.name": "few_shot", "method.pseudo_label_backbones.0.model": "tiny_synthetic",
                            "method.pseudo_label_backbones.0.pretrained": "packaged", "trainer.max_epochs": 10}),
    ("promptkd/base2new", {"method.n_ctx_vision": 4, "method.depth_vision": 9, "method.kd_weight": 1000.0,
                           "method.temperature": 1.0, "optim.lr": 0.005, "trainer.max_epochs": 20,
                           "data.batch_size": 8, "shots": -1, "backbone.model": "ViT-B-16"}),
    ("promptkd/cross_dataset", {"method.depth_vision": 3, "protocol.name": "few_shot", "shots": -1}),
    ("proda/base2new", {"method.n_prompts": 32, "method.n_ctx": 16, "method.lambda_div": 1.0, "optim.lr": 0.002,
                        "trainer.max_epochs": 200, "data.batch_size": 32, "backbone.model": "ViT-B-16"}),
    ("proda/few_shot", {"backbone.model": "RN50", "shots": 16, "trainer.max_epochs": 200}),
    ("gopro/base2new", {"method.n_ctx": 4, "method.ctx_init": "a photo of a", "optim.lr": 0.002,
                        "trainer.max_epochs": 50, "data.batch_size": 4, "shots": 16}),
    ("mocoop/base2new", {"method.name": "mocoop", "optim.lr": 0.002, "optim.warmup_epochs": 1,
                         "trainer.max_epochs": 10, "data.batch_size": 1, "method.max_grad_norm": 1.0,
                         "method.ln_lr_scale": 0.1, "shots": 16}),
    ("mocoop/cross_dataset", {"protocol.name": "cross_dataset", "dataset.name": "imagenet", "shots": 1,
                               "data.batch_size": 1, "trainer.max_epochs": 10}),
    ("mocoop/base2new_b32", {"optim.lr": 0.032, "optim.warmup_epochs": 5, "trainer.max_epochs": 50,
                             "data.batch_size": 32}),
    ("rpo/base2new", {"method.name": "rpo", "method.n_prompts": 24, "optim.lr": 0.01, "trainer.max_epochs": 15,
                      "data.batch_size": 4, "shots": 16, "protocol.name": "base2new", "backbone.name": "vit_b16"}),
    ("rpo/domain_gen", {"method.n_prompts": 24, "optim.lr": 0.005, "trainer.max_epochs": 15, "data.batch_size": 4,
                        "protocol.name": "domain_gen", "dataset.name": "imagenet", "shots": 16}),
    ("bayes_pl/base2new_eurosat", {"method.name": "bayes_pl", "dataset.name": "eurosat", "trainer.max_epochs": 60,
                                   "optim.lr": 0.002, "data.batch_size": 1, "shots": 16,
                                   "method.n_samples_per_dataset.eurosat": 20, "method.kl_weight": 0.001}),
    ("bayes_pl/cross_dataset", {"dataset.name": "imagenet", "protocol.name": "cross_dataset", "trainer.max_epochs": 10,
                                "method.n_samples_per_dataset.imagenet": 10}),
    ("ivlp/base2new", {"method.n_ctx_text": 2, "method.depth_text": 12, "optim.lr": 0.0035, "trainer.max_epochs": 5}),
    ("ivlp/base2new_promptsrc", {"method.n_ctx_text": 4, "method.n_ctx_vision": 4, "method.depth_text": 9,
                                 "method.depth_vision": 9, "optim.lr": 0.0025, "trainer.max_epochs": 20}),
])
def test_presets_carry_the_official_values(preset: str, expected: dict) -> None:
    cfg = compose_config([f"experiment={preset}"])
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected
    assert (cfg.trainer.precision, cfg.optim.momentum, cfg.optim.weight_decay) == ("auto", 0.9, 5e-4)


def test_auto_precision_is_bf16_autocast_on_a_gpu_only(monkeypatch) -> None:
    import torch

    from prompt_learning.engine.run import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "auto") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert (resolve_precision("auto", "auto"), resolve_precision("auto", "cpu")) == ("bf16-mixed", "32-true")
    assert resolve_precision("16-mixed", "gpu") == "16-mixed"


def test_eval_config_composes() -> None:
    assert compose_config(["run_dir=/tmp/x"], config_name="eval").run_dir == "/tmp/x"


def test_overrides_reach_the_method() -> None:
    cfg = compose_config(["method.n_ctx=4", "method.class_token_position=middle", "shots=4", "seed=2"])
    assert (cfg.method.n_ctx, cfg.method.class_token_position, cfg.shots, cfg.seed) == (4, "middle", 4, 2)
    assert re.search(r"base2new/synthetic/coop/tiny_synthetic/shots_4/seed_2-[0-9a-f]{8}$", cfg.paths.run_dir)


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


def test_folder_runs_of_different_roots_get_different_directories(monkeypatch) -> None:
    import hashlib
    import re

    def run_dir(root: str, *extra: str) -> str:
        return compose_config(["dataset=folder", f"dataset.root={root}", *extra]).paths.run_dir

    pets, cars = run_dir("/data/pets"), run_dir("/data/cars")
    assert f"/folder-pets-{hashlib.sha1(b'/data/pets').hexdigest()[:6]}/" in pets and "/folder-cars-" in cars
    same_base = {run_dir("/data/pets/images"), run_dir("/data/cars/images")}  # same base name, other folders
    assert len(same_base) == 2 and all(re.search(r"/folder-images-[0-9a-f]{6}/", d) for d in same_base)
    monkeypatch.chdir(Path(__file__).parent)
    assert run_dir(str(Path.cwd() / "pets")) == run_dir("pets")  # relative and absolute: the same folder
    monkeypatch.setenv("PL_DATA_ROOT", "/data/benchmarks")  # the benchmarks' root is never taken as the folder
    assert compose_config(["dataset=folder"]).dataset.root is None


def test_misspelt_cli_key_names_close_matches_and_valid_keys() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_overrides(["method=coop", "method.n_ctxx=4", "seed=1,2"])
    message = str(info.value)
    assert "'method.n_ctxx'" in message and "method.n_ctx" in message and "class_token_position" in message
    check_overrides(["method=zeroshot", "method.templates=[ensemble]", "-m", "+hydra.job.env_set.X=1"])  # valid
    with pytest.raises(ConfigurationError, match="'shot'.*Did you mean shots"):  # Hydra's hint for shot=4
        check_overrides(["+shot=4"])
    with pytest.raises(ConfigurationError, match="'extra'.*Top-level keys"):
        check_overrides(["method=coop", "+extra=1"])
    with pytest.raises(ConfigurationError, match="optim.lrr.*optim.lr"):
        check_overrides(["optim.lrr=0.1"])
