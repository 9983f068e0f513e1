"""Use a learned prompt outside training: reload in a process without Lightning / Hydra, the
standalone classifier head with plain open_clip, refusals, predict CLI, interpretation, W&B artifact."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from safetensors.torch import save_file

from prompt_learning import FrozenCLIP, PromptedCLIP, create_method, export_classifier, save_export
from prompt_learning.backbone.tiny import MODEL_CONFIG_DIR
from prompt_learning.engine.run import train_and_test
from prompt_learning.errors import ConfigurationError, DataError
from prompt_learning.export.interpret import CAVEAT, interpret
from prompt_learning.methods import list_methods
from prompt_learning.prompts import ClassSet

from .conftest import CLASSES, teacher_keys

NEW_CLASSES = ["purple square", "orange diamond", "pink circle"]


class KeepMethod(Callback):
    def __init__(self) -> None:
        self.method = None

    def on_test_start(self, trainer, pl_module) -> None:
        self.method = pl_module.method


RELOAD = r"""
import json, sys
import torch, open_clip
from safetensors.torch import load_file
work = sys.argv[1]
manifest = json.load(open(f"{work}/manifest.json"))
torch.set_num_threads(manifest["threads"])  # the writer's: the same reduction order, the same float sums
images = load_file(f"{work}/images.safetensors")["images"]
# 1. the classifier head with plain open_clip + torch, before this package is imported at all
open_clip.add_model_config(manifest["model_config"])
model = open_clip.create_model("tiny_test", pretrained=manifest["weights"]).eval()
head = load_file(manifest["head"])
with torch.no_grad():
    f = torch.nn.functional.normalize(model.encode_image(images).float(), dim=-1)
    head_logits = head["logit_scale"] * f @ head["text_features"].T
assert "prompt_learning" not in sys.modules
err = (head_logits - load_file(manifest["head_expected"])["logits"]).abs().max().item()
assert err <= 1e-5, ("head", err)
# 2. every export through PromptedCLIP, without Lightning or Hydra
from prompt_learning import PromptedCLIP
from PIL import Image
pictures = [Image.open(path).convert("RGB") for path in manifest["pictures"]]
for name, entry in manifest["methods"].items():
    model = PromptedCLIP.from_pretrained(entry["export"], backbone=manifest["weights"])  # exports name files, not paths
    logits = model.logits(pictures if entry["adapts"] else images, entry["classes"])  # TPT: views of decoded images
    err = (logits - load_file(entry["expected"])["logits"]).abs().max().item()
    assert err <= 1e-6, (name, err)
    if entry["unseen_ok"]:
        inputs = pictures if entry["adapts"] else images
        assert model.predict(inputs, manifest["new_classes"], top_k=2).top_probs.shape == (images.shape[0], 2)
bad = [m for m in ("lightning", "pytorch_lightning", "hydra", "omegaconf") if m in sys.modules]
assert not bad, bad
print("reloaded", len(manifest["methods"]))
"""


def test_every_method_reloads_in_a_process_without_lightning_or_hydra(run_cfg, tmp_path: Path, tiny_backbone: FrozenCLIP,
                                                                   kd_teacher: dict) -> None:
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    save_file({"images": images}, tmp_path / "images.safetensors")
    weights = tmp_path / "tiny_test.safetensors"  # the random tiny backbone as a checkpoint file the export names
    save_file({k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}, weights)
    pictures = []  # what a test-time-adaptive method (TPT) is given: decoded images, for its own views
    for i in range(images.shape[0]):
        pixels = (torch.rand(40, 36, 3, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"picture_{i}.png")
        pictures.append(tmp_path / f"picture_{i}.png")
    manifest = {"methods": {}, "new_classes": NEW_CLASSES, "model_config": str(MODEL_CONFIG_DIR / "tiny_test.json"),
                "weights": str(weights), "pictures": [str(p) for p in pictures], "threads": torch.get_num_threads()}
    for name, cls in list_methods().items():
        keep = KeepMethod()
        protocol = "protocol=base2new" if cls.supports_unseen_classes else "protocol=few_shot"
        cfg = run_cfg(f"method={name}", f"backbone.pretrained={weights}", protocol, "trainer.max_epochs=1", "shots=1",
                      "data.batch_size=8", "protocol.eval_zero_shot=false", "data.eval_cache=false",
                      "dataset.train_per_class=4", "dataset.test_per_class=1",  # the reload is the test, not the run
                      f"paths.output_dir={tmp_path / 'runs'}",
                      *(f"method.{k}={v}" for k, v in teacher_keys(name, kd_teacher).items()))
        train_and_test(cfg, callbacks=[keep])
        method = keep.method
        export = Path(cfg.paths.run_dir) / "export"
        classes = list(json.loads((export / "prompt_config.json").read_text())["classnames"])
        if method.test_time_adaptive:
            decoded = [Image.open(p).convert("RGB") for p in pictures]
            expected = PromptedCLIP(method, method.train_classes.template).logits(decoded, classes)
        else:
            with torch.no_grad():
                expected = method.eval()(images, ClassSet(tuple(classes), method.train_classes.template)).logits
        save_file({"logits": expected.contiguous()}, tmp_path / f"{name}.safetensors")
        manifest["methods"][name] = {"export": str(export), "classes": classes, "expected": str(tmp_path / f"{name}.safetensors"),
                                     "unseen_ok": bool(method.supports_unseen_classes),
                                     "adapts": bool(method.test_time_adaptive)}
        if name == "coop":
            head = export_classifier(method, classes, tmp_path / "head.safetensors")
            manifest["head"] = str(head)
            manifest["head_expected"] = str(tmp_path / f"{name}.safetensors")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"reloaded {len(list_methods())}" in proc.stdout


def test_export_sizes_on_vit_b16(vit_b16: FrozenCLIP, tmp_path: Path) -> None:
    sizes = {}
    for name in ("coop", "maple"):
        save_export(tmp_path / name, create_method({"name": name}, vit_b16, CLASSES))
        sizes[name] = (tmp_path / name / "prompts.safetensors").stat().st_size
    assert sizes["coop"] <= 100_000 and sizes["maple"] <= 16_000_000, sizes
    assert sizes["maple"] - 3_555_072 * 4 < 10_000  # fp32 tensors plus a small JSON header, nothing else


@pytest.fixture
def coop_export(tiny_backbone: FrozenCLIP, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_export(tmp_path / "export", create_method({"name": "coop", "ctx_init": "a photo of a"}, tiny_backbone, CLASSES))
    return tmp_path / "export"


def test_refusals_name_the_problem(coop_export: Path, tiny_backbone: FrozenCLIP, custom_text_backbone) -> None:
    with pytest.raises(ConfigurationError, match="tiny_test.*tiny_test_custom_text|model_name"):
        PromptedCLIP.from_pretrained(coop_export, backbone=custom_text_backbone)
    config_path = coop_export / "prompt_config.json"
    original = config_path.read_text()
    config = json.loads(original)
    config["format_version"] = 99
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConfigurationError, match="format_version 99"):
        PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone)
    config = json.loads(original)
    config["method"]["n_ctxx"] = 3
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConfigurationError, match="n_ctxx"):
        PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone)
    config_path.write_text(original)
    tensors = coop_export / "prompts.safetensors"
    good = tensors.read_bytes()
    tensors.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(ConfigurationError, match="not a valid safetensors file"):
        PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone)
    save_file({"context.ctx": torch.zeros(7, 64)}, tensors)
    with pytest.raises(ConfigurationError, match=r"context.ctx.*\(7, 64\).*\(4, 64\)"):
        PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone)
    tensors.write_bytes(good)
    model = PromptedCLIP.from_pretrained(coop_export / "prompts.safetensors", backbone=tiny_backbone)
    assert model.trained_classnames == CLASSES.names


def test_classifier_head_is_refused_where_it_cannot_exist(tiny_backbone: FrozenCLIP, tmp_path: Path) -> None:
    for name, reason in (("cocoop", "image-conditioned"), ("maple", "prompts the image tower"),
                         ("linear_probe", "its own head")):
        with pytest.raises(ConfigurationError, match=reason):
            export_classifier(create_method({"name": name}, tiny_backbone, CLASSES), CLASSES.names, tmp_path / "h")


def test_predict_cli_skips_unreadable_images(coop_export: Path, tmp_path: Path, monkeypatch, tiny_backbone) -> None:
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (60 * i, 20, 200)).save(folder / f"ok_{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "preds.csv"
    monkeypatch.setattr(sys, "argv", ["predict.py", f"export={coop_export}", f"images={folder}",
                                      "classnames=red star,blue ring,green cross", "top_k=2", f"out={out}"])
    monkeypatch.setattr("prompt_learning.export.io._backbone_for", lambda identity: tiny_backbone)
    runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "predict.py"), run_name="__main__")
    rows = out.read_text().splitlines()
    assert rows[0] == "path,label_1,prob_1,label_2,prob_2" and len(rows) == 4
    assert all("broken" not in r for r in rows)
    probs = [float(r.split(",")[2]) for r in rows[1:]]
    assert all(0 < p <= 1 for p in probs)
    from prompt_learning.export.predict import image_paths, read_classnames

    with pytest.raises(DataError, match="No images found"):
        image_paths(str(tmp_path / "nothing" / "*.jpg"))
    with pytest.raises(DataError, match="at least two"):
        read_classnames("just one")


def test_interpretation_finds_the_init_phrase(coop_export: Path, tiny_backbone: FrozenCLIP) -> None:
    method = PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone).method
    lines = interpret(method, k=3)
    assert lines[0] == CAVEAT
    assert "context (4 vectors):" in lines
    photo = lines[lines.index("context (4 vectors):") + 3]  # vector 2 starts with the embedding of "photo"
    assert photo.startswith("  [2] cosine: 'photo' 1.000")
    deep = create_method({"name": "maple", "depth": 2}, tiny_backbone, CLASSES)
    assert any(line.startswith("text layer 1 (2 vectors)") for line in interpret(deep))


def test_wandb_offline_run_logs_the_export_as_an_artifact(run_cfg) -> None:
    pytest.importorskip("wandb")
    cfg = run_cfg("logger=wandb_offline", "trainer.max_epochs=1", "protocol.eval_zero_shot=false")
    train_and_test(cfg)
    log = next((Path(cfg.paths.run_dir) / "wandb").glob("offline-run-*/*.wandb")).read_bytes()
    # the run log's artifact record (protobuf strings are stored verbatim): name, type and both files
    for field in (b"prompts-coop-synthetic-tiny_test", b"prompts.safetensors", b"prompt_config.json"):
        assert field in log, field
