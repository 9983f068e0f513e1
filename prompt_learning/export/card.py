"""The model card of an export (``README.md``), rendered from ``prompt_config.json`` alone.

The card opens with YAML front matter that the Hugging Face Hub reads (``library_name``, ``tags``,
``pipeline_tag``, and ``base_model`` where the backbone's open_clip tag comes from a hub repository),
then says what was learned (method, backbone, dataset, shots, seed), how well it did (the run's test
accuracies), how to reproduce it (the command) and how to load it (a ``PromptedCLIP`` snippet).
Because the card is a function of the config, ``save_pretrained`` and ``push_to_hub`` regenerate it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

LIBRARY_NAME = "prompt-learning"
SUMMARY_METRICS = {"hm": "HM (harmonic mean of base and new)"}  # record fields beside the per-set accuracies


def portable_arg(arg: str, cwd: Path | None = None) -> str:
    """An argument without the machine's directories: a path below ``cwd`` relative to it, another
    absolute path as ``<dir>/<file name>`` (also as the value of a ``key=value`` override)."""
    key, sep, value = arg.partition("=") if "=" in arg else ("", "", arg)
    expanded = os.path.expanduser(value)
    if not os.path.isabs(expanded):
        return arg
    cwd = Path.cwd() if cwd is None else cwd
    path = Path(expanded)
    portable = path.relative_to(cwd).as_posix() if path.is_relative_to(cwd) else f"<dir>/{path.name}"
    return f"{key}{sep}{portable or '.'}"


def _hydra_task_overrides(run_dir: Path | None) -> list[str] | None:
    """The overrides of the Hydra job running in this process (a multirun point's own), read only if the
    application already imported Hydra (this library never imports it), and only when that job's output
    directory is ``run_dir``: Hydra's record of a job outlives it in the process, so a run started otherwise
    (from Python, after an earlier Hydra job) must not take that job's command."""
    module = sys.modules.get("hydra.core.hydra_config")
    config_class = getattr(module, "HydraConfig", None)
    if run_dir is None or config_class is None or not config_class.initialized():
        return None
    job = config_class.get()
    try:
        output_dir = getattr(getattr(job, "runtime", None), "output_dir", None)
    except Exception:  # a Hydra config composed without running a job: no output directory (missing value)
        return None
    if not output_dir or Path(str(output_dir)).resolve() != Path(run_dir).resolve():
        return None
    return [str(o) for o in job.overrides.task]


def launch_command(argv: list[str] | None = None, run_dir: Path | None = None) -> str:
    """The command that reproduces the run of this process: ``uv run <script> <overrides>``, with the
    overrides of the Hydra job writing ``run_dir`` when there is one (a multirun point's, not the sweep's),
    else the process's arguments; directories outside the working directory are elided (``portable_arg``)."""
    overrides = _hydra_task_overrides(run_dir) if argv is None else None
    argv = list(sys.argv if argv is None else argv)
    args = overrides if overrides is not None else argv[1:]
    script = portable_arg(argv[0]) if argv else "python"
    if not script.endswith(".py"):
        script = Path(script).name
    return " ".join(shlex.quote(a) for a in ["uv", "run", script, *(portable_arg(a) for a in args)])


def _weights(backbone: dict[str, Any]) -> str:
    tag, name, digest = backbone.get("pretrained"), backbone.get("checkpoint"), backbone.get("checkpoint_sha256")
    if tag == "packaged":
        return "`packaged` (the tiny CLIP shipped with prompt_learning)"
    if tag:
        return f"open_clip pretrained tag `{tag}`"
    if name:
        return f"local checkpoint `{Path(name).name}` (sha256 `{digest}`)"
    return "random initialisation (no pretrained weights)"


def _base_model(backbone: dict[str, Any]) -> str | None:
    """The hub repository open_clip downloads the backbone's tag from, if any."""
    tag = backbone.get("pretrained")
    if not tag or tag == "packaged":
        return None
    try:
        import open_clip

        hub = (open_clip.get_pretrained_cfg(backbone["model_name"], tag) or {}).get("hf_hub", "")
    except Exception:  # an architecture this open_clip does not know: no link, the card is still written
        return None
    return hub.strip("/") or None


def _front_matter(config: dict[str, Any]) -> list[str]:
    backbone, method = config["backbone"], config["method"]["name"]
    tags = [LIBRARY_NAME, "clip", "open_clip", "prompt-learning", "soft-prompts", method]
    if dataset := config.get("dataset") or (config.get("training") or {}).get("dataset"):
        tags.append(str(dataset))
    lines = ["---", f"library_name: {LIBRARY_NAME}", "pipeline_tag: zero-shot-image-classification", "tags:"]
    lines += [f"- {json.dumps(t)}" for t in dict.fromkeys(tags)]
    if base := _base_model(backbone):
        lines.append(f"base_model: {json.dumps(base)}")
    return [*lines, "---", ""]


def _fmt(value: Any) -> str:
    return "–" if not isinstance(value, (int, float)) else f"{value:.2f}"


def _metrics(results: dict[str, Any]) -> list[str]:
    """The test-accuracy table of the run (and of zero-shot CLIP on the same sets, when it was evaluated)."""
    metrics, zero_shot = results.get("metrics") or {}, results.get("zero_shot") or {}
    if not metrics:
        return ["No test metrics were recorded with this export."]
    with_zs = bool(zero_shot.get("metrics"))
    head = "| Eval set | Top-1 accuracy (%) |" + (" Zero-shot CLIP (%) |" if with_zs else "")
    lines = [head, "|---|---:|" + ("---:|" if with_zs else "")]
    rows = [(name, (m or {}).get("acc"), (zero_shot.get("metrics", {}).get(name) or {}).get("acc"))
            for name, m in metrics.items()]
    rows += [(label, results.get(key), zero_shot.get(key)) for key, label in SUMMARY_METRICS.items()
             if results.get(key) is not None]
    for name, acc, zs in rows:
        lines.append(f"| {name} | {_fmt(acc)} |" + (f" {_fmt(zs)} |" if with_zs else ""))
    protocol = results.get("protocol")
    return [*lines, "", f"Protocol: `{protocol}` (see docs/protocols.md); the model after the last epoch, "
            f"never selected on test accuracy." if protocol else ""]


def _load_snippet(config: dict[str, Any], repo_id: str | None) -> list[str]:
    where = f"hf-hub:{repo_id}" if repo_id else "path/to/export"
    backbone = config["backbone"]
    local = backbone.get("checkpoint") and not backbone.get("pretrained")
    arg = f', backbone="/path/to/{Path(backbone["checkpoint"]).name}"' if local else ""
    names = [str(n) for n in config.get("classnames", [])[:3]] or ["a class", "another class"]
    lines = ["```python", "from PIL import Image", "from prompt_learning import PromptedCLIP", "",
             f'model = PromptedCLIP.from_pretrained("{where}"{arg})',
             f"pred = model.predict([Image.open(\"photo.jpg\")], {json.dumps(names)}, top_k=1)",
             "print(pred.top_labels, pred.top_probs)", "```"]
    if local:
        lines += ["", f"The backbone is a local checkpoint that is not distributed with the prompts: pass its path "
                      f"as `backbone=`; its sha256 must be `{backbone.get('checkpoint_sha256')}`."]
    return lines


def model_card(config: dict[str, Any], repo_id: str | None = None) -> str:
    """Markdown (with hub front matter) describing the export ``config``; ``repo_id`` goes into the snippet."""
    method, backbone, training = config["method"], config["backbone"], config.get("training") or {}
    name = method["name"]
    dataset = config.get("dataset") or training.get("dataset") or "an unnamed class set"
    options = ", ".join(f"{k}={v!r}" for k, v in method.items() if k != "name") or "defaults"
    classnames = [str(c) for c in config.get("classnames", [])]
    shown = ", ".join(classnames[:8]) + (f", … ({len(classnames)} in all)" if len(classnames) > 8 else "")
    shots = training.get("shots")
    rows = [("Method", f"`{name}` ({options})"),
            ("Backbone", f"open_clip `{backbone['model_name']}`, {_weights(backbone)}"),
            ("Dataset", f"`{dataset}`; {len(classnames)} training classes: {shown}"),
            ("Shots", "all training images" if shots == -1 else f"{shots} per class" if shots is not None else "–"),
            ("Seed", str(training.get("seed", "–"))),
            ("Training", f"{training.get('epochs', '–')} epochs on {training.get('n_train', '–')} images"),
            ("Prompt template", f"`{config.get('template')}`"),
            ("Trained with", f"prompt_learning {config.get('package_version') or '(unknown version)'}, commit "
                             f"`{(config.get('git_commit') or 'unknown')[:12]}`, open_clip "
                             f"{backbone.get('open_clip_version', '–')}")]
    command = training.get("command")
    lines = [*_front_matter(config), f"# {name} prompts for {backbone['model_name']} on {dataset}", "",
             f"Learned soft prompts (method `{name}`) for a frozen open_clip model, trained with prompt_learning. "
             "The files hold only the learned tensors (`prompts.safetensors`) and what is needed to rebuild them "
             "on their backbone (`prompt_config.json`); the backbone itself is not included.", "",
             "## Training", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
             "## Test results", "", *_metrics(config.get("results") or {}), "",
             "## Reproduce", "", *(["```bash", command, "```"] if command else
                                   ["The command was not recorded (the prompts were saved outside a training run)."]),
             "", "## Use", "", *_load_snippet(config, repo_id), ""]
    return "\n".join(lines)
