"""Sharing learned prompts: exports name their backbone without directories (packaged weights by name, a local
checkpoint by file name + sha256), ``from_pretrained(..., backbone=<path>)`` for a moved checkpoint,
``save_pretrained`` / ``from_pretrained`` round trips, the model card, ``hf-hub:`` loads from the Hugging Face
cache offline, and ``push_to_hub`` (its hub calls replaced by fakes: no network)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from prompt_learning import FrozenCLIP, PromptedCLIP, create_method, save_export
from prompt_learning.backbone.tiny import TINY_SYNTHETIC_WEIGHTS
from prompt_learning.backbone.weights import sha256_of
from prompt_learning.errors import BackboneWeightsError, ConfigurationError
from prompt_learning.export import push_to_hub
from prompt_learning.export.card import launch_command

from .conftest import CLASSES

EXPORT_FILES = {"prompts.safetensors", "prompt_config.json", "README.md"}
RECORD = {"protocol": "base2new", "metrics": {"base": {"acc": 45.0}, "new": {"acc": 46.09375}}, "hm": 45.5403,
          "zero_shot": {"metrics": {"base": {"acc": 41.40625}, "new": {"acc": 40.46875}}, "hm": 40.9321}}
TRAINING = {"epochs": 2, "n_train": 8, "shots": 2, "seed": 3, "dataset": "synthetic"}


def strings(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return [obj] if isinstance(obj, str) else []


def assert_no_directories(export: Path, *dirs: Path) -> None:
    text = (export / "prompt_config.json").read_text()
    assert not [s for s in strings(json.loads(text)) if os.path.isabs(s) or s.startswith("~")]
    assert not [d for d in dirs if str(d) in text]


def coop(backbone: FrozenCLIP) -> PromptedCLIP:
    torch.manual_seed(0)
    method = create_method({"name": "coop", "ctx_init": "a photo of a"}, backbone, CLASSES)
    return PromptedCLIP(method, CLASSES.template, CLASSES.dataset)


def pixels(backbone: FrozenCLIP) -> torch.Tensor:
    size = backbone.image_size
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))


def same_logits(a: PromptedCLIP, b: PromptedCLIP) -> bool:
    images = pixels(a.backbone)
    return torch.equal(a.logits(images, CLASSES.names), b.logits(images, CLASSES.names))


@pytest.fixture(scope="module")
def packaged() -> FrozenCLIP:
    return FrozenCLIP("tiny_synthetic", "packaged")


@pytest.fixture(scope="module")
def packaged_export(packaged: FrozenCLIP, tmp_path_factory) -> Path:
    return save_export(tmp_path_factory.mktemp("packaged") / "export", coop(packaged).method, TRAINING, record=RECORD,
                       command="uv run scripts/train.py method=coop shots=2 seed=3")


@pytest.fixture
def local_checkpoint(tmp_path: Path, tiny_backbone: FrozenCLIP) -> Path:
    """The random tiny backbone saved as a checkpoint file (how ``backbone.pretrained=<file>`` is used)."""
    path = tmp_path / "weights" / "tiny_test.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}, path)
    return path


def test_packaged_export_names_its_weights_and_reloads(packaged: FrozenCLIP, packaged_export: Path) -> None:
    assert_no_directories(packaged_export, TINY_SYNTHETIC_WEIGHTS.parent)
    identity = json.loads((packaged_export / "prompt_config.json").read_text())["backbone"]
    assert (identity["pretrained"], identity["checkpoint"]) == ("packaged", "tiny_synthetic.safetensors")
    assert identity["checkpoint_sha256"] == sha256_of(TINY_SYNTHETIC_WEIGHTS)
    assert same_logits(coop(packaged), PromptedCLIP.from_pretrained(packaged_export))


def test_old_exports_with_absolute_paths_still_load(packaged: FrozenCLIP, packaged_export: Path, tmp_path: Path,
                                                    local_checkpoint: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(packaged_export, old)
    config = json.loads((old / "prompt_config.json").read_text())
    config["backbone"].update(pretrained=None, checkpoint="/moved/site-packages/tiny_synthetic.safetensors")
    (old / "prompt_config.json").write_text(json.dumps(config))
    assert same_logits(coop(packaged), PromptedCLIP.from_pretrained(old))  # the packaged file, known by name + digest
    local = FrozenCLIP("tiny_test", str(local_checkpoint))
    save_export(old, coop(local).method)
    config = json.loads((old / "prompt_config.json").read_text())
    config["backbone"]["checkpoint"] = str(local_checkpoint)  # what exports held before
    (old / "prompt_config.json").write_text(json.dumps(config))
    assert same_logits(coop(local), PromptedCLIP.from_pretrained(old))
    local_checkpoint.unlink()
    with pytest.raises(BackboneWeightsError, match=r"it was at .*backbone='<path to tiny_test.safetensors>'"):
        PromptedCLIP.from_pretrained(old)


def test_local_checkpoint_export_moves_with_its_file(local_checkpoint: Path, tmp_path: Path) -> None:
    local = FrozenCLIP("tiny_test", str(local_checkpoint))
    reference = coop(local)
    export = save_export(tmp_path / "export", reference.method)
    assert_no_directories(export, tmp_path)
    identity = json.loads((export / "prompt_config.json").read_text())["backbone"]
    assert identity["checkpoint"] == "tiny_test.safetensors" and identity["pretrained"] is None
    moved = tmp_path / "elsewhere" / "renamed.safetensors"
    moved.parent.mkdir()
    local_checkpoint.rename(moved)
    with pytest.raises(BackboneWeightsError) as missing:
        PromptedCLIP.from_pretrained(export)
    assert "backbone='<path to tiny_test.safetensors>'" in str(missing.value)
    assert "backbone.pretrained" not in str(missing.value)
    assert same_logits(reference, PromptedCLIP.from_pretrained(export, backbone=moved))
    wrong = tmp_path / "other.safetensors"
    state = {k: v.clone().contiguous() for k, v in local.model.state_dict().items()}
    state["logit_scale"] += 1.0
    save_file(state, wrong)
    with pytest.raises(BackboneWeightsError) as mismatch:
        PromptedCLIP.from_pretrained(export, backbone=str(wrong))
    for part in ("other.safetensors", "tiny_test.safetensors", sha256_of(wrong), identity["checkpoint_sha256"]):
        assert part in str(mismatch.value)
    with pytest.raises(ConfigurationError, match="weights.*random weights"):  # a FrozenCLIP is checked too
        PromptedCLIP.from_pretrained(export, backbone=FrozenCLIP("tiny_test"))


def test_save_pretrained_round_trip(packaged_export: Path, tmp_path: Path) -> None:
    model = PromptedCLIP.from_pretrained(packaged_export)
    saved = model.save_pretrained(tmp_path / "mine")
    assert {p.name for p in saved.iterdir()} == EXPORT_FILES
    for name in EXPORT_FILES:  # provenance, results and command survive; the card is regenerated identically
        assert (saved / name).read_bytes() == (packaged_export / name).read_bytes(), name
    assert same_logits(model, PromptedCLIP.from_pretrained(saved))


def test_model_card(packaged_export: Path, tmp_path: Path, local_checkpoint: Path) -> None:
    card = (packaged_export / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: prompt-learning" in front and '- "coop"' in front and '- "synthetic"' in front
    for expected in ("# coop prompts for tiny_synthetic on synthetic", "| Method | `coop` (n_ctx=4",
                     "open_clip `tiny_synthetic`, `packaged`", "| Shots | 2 per class |", "| Seed | 3 |",
                     "| Eval set | Top-1 accuracy (%) | Zero-shot CLIP (%) |", "| base | 45.00 | 41.41 |",
                     "| new | 46.09 | 40.47 |", "| HM (harmonic mean of base and new) | 45.54 | 40.93 |",
                     "```bash\nuv run scripts/train.py method=coop shots=2 seed=3\n```",
                     'model = PromptedCLIP.from_pretrained("path/to/export")'):
        assert expected in body, expected
    local = save_export(tmp_path / "local", coop(FrozenCLIP("tiny_test", str(local_checkpoint))).method)
    card = (local / "README.md").read_text()
    assert f"local checkpoint `tiny_test.safetensors` (sha256 `{sha256_of(local_checkpoint)}`)" in card
    assert 'from_pretrained("path/to/export", backbone="/path/to/tiny_test.safetensors")' in card
    assert "No test metrics were recorded" in card and "The command was not recorded" in card


def test_launch_command_is_portable(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [str(tmp_path / "scripts" / "train.py"), "method=coop", f"dataset.root={tmp_path}/data/pets",
            "backbone.pretrained=/opt/weights/ViT-B-16.pt", "method.ctx_init=a photo of a"]
    assert launch_command(argv) == ("uv run scripts/train.py method=coop dataset.root=data/pets "
                                    "'backbone.pretrained=<dir>/ViT-B-16.pt' 'method.ctx_init=a photo of a'")
    job = types.SimpleNamespace(overrides=types.SimpleNamespace(task=["method=maple", "seed=2"]),
                                runtime=types.SimpleNamespace(output_dir=str(tmp_path / "point")))
    hydra_config = types.SimpleNamespace(initialized=lambda: True, get=lambda: job)
    monkeypatch.setitem(sys.modules, "hydra.core.hydra_config", types.SimpleNamespace(HydraConfig=hydra_config))
    monkeypatch.setattr(sys, "argv", ["scripts/train.py", "-m", "method=maple", "seed=1,2"])
    point = "uv run scripts/train.py method=maple seed=2"  # the multirun point's own overrides
    assert launch_command(run_dir=tmp_path / "point") == point
    # a run that is not that Hydra job's (started from Python after it) keeps the process's arguments
    assert launch_command(run_dir=tmp_path / "other") == "uv run scripts/train.py -m method=maple seed=1,2"


def populate_hub_cache(cache: Path, repo_id: str, export: Path) -> str:
    """The layout huggingface_hub's cache has after a download: blobs, a snapshot of symlinks, refs/main."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in export.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / blob)
        (repo / "snapshots" / commit / file.name).symlink_to(Path("..", "..", "blobs", blob))
    return commit


def test_hf_hub_reference_loads_from_the_offline_cache(packaged: FrozenCLIP, packaged_export: Path, tmp_path: Path,
                                                        monkeypatch) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    commit = populate_hub_cache(cache, "someone/coop-synthetic", packaged_export)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read by huggingface_hub at import time
    model = PromptedCLIP.from_pretrained("hf-hub:someone/coop-synthetic")
    assert same_logits(coop(packaged), model)
    assert model.config["training"]["command"] == "uv run scripts/train.py method=coop shots=2 seed=3"
    assert PromptedCLIP.from_pretrained(f"hf-hub:someone/coop-synthetic@{commit}").trained_classnames == CLASSES.names
    with pytest.raises(ConfigurationError, match="hf-hub:someone/absent .*not in the local Hugging Face cache"):
        PromptedCLIP.from_pretrained("hf-hub:someone/absent")
    with pytest.raises(ConfigurationError, match="hf-hub:<owner>/<name>"):
        PromptedCLIP.from_pretrained("hf-hub:no-owner")


def test_push_to_hub_uploads_the_export_with_its_card(packaged_export: Path, monkeypatch) -> None:
    from huggingface_hub import HfApi

    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs: Any) -> types.SimpleNamespace:
        files = {p.name: p.read_bytes() for p in Path(kwargs["folder_path"]).iterdir()}
        calls.append(("upload_folder", {**kwargs, "files": files}))
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = push_to_hub(packaged_export, "me/coop-prompts", private=True)
    assert url == "https://huggingface.co/me/coop-prompts/commit/abc"
    (_, created), (_, uploaded) = calls
    assert created == {"repo_id": "me/coop-prompts", "repo_type": "model", "private": True, "exist_ok": True}
    assert uploaded["repo_id"] == "me/coop-prompts" and set(uploaded["files"]) == EXPORT_FILES
    for name in ("prompts.safetensors", "prompt_config.json"):
        assert uploaded["files"][name] == (packaged_export / name).read_bytes()
    card = uploaded["files"]["README.md"].decode()
    assert 'PromptedCLIP.from_pretrained("hf-hub:me/coop-prompts")' in card and "| base | 45.00 | 41.41 |" in card
    calls.clear()
    PromptedCLIP.from_pretrained(packaged_export).push_to_hub("me/again")
    assert calls[1][1]["files"]["prompt_config.json"] == (packaged_export / "prompt_config.json").read_bytes()
    assert 'from_pretrained("hf-hub:me/again")' in calls[1][1]["files"]["README.md"].decode()


def test_a_run_exports_its_metrics_and_command(run_cfg, monkeypatch) -> None:
    from prompt_learning.engine.run import train_and_test

    args = ["method=zeroshot", "backbone=tiny_synthetic", "protocol=few_shot", "shots=1"]  # no training: a fast run
    monkeypatch.setattr(sys, "argv", ["scripts/train.py", *args])
    cfg = run_cfg(*args)
    record = train_and_test(cfg)
    export = Path(cfg.paths.run_dir) / "export"
    assert_no_directories(export, Path(cfg.paths.output_dir), TINY_SYNTHETIC_WEIGHTS.parent)
    assert record["backbone"]["checkpoint"] == "tiny_synthetic.safetensors"  # results.json: no directory either
    card = (export / "README.md").read_text()
    assert f"```bash\nuv run scripts/train.py {' '.join(args)}\n```" in card
    (name, metric), = record["metrics"].items()
    assert f"| {name} | {metric['acc']:.2f} |" in card and "| Seed | 1 |" in card and "| Shots | 1 per class |" in card
