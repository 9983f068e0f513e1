"""RPO training step: the official computation (mlvlab/RPO) against ours (``benchmark.py --rpo``).

ViT-B/16 with random weights (``pretrained=None``: the cost does not depend on them), K = 24 prompt pairs
(main_K24.yaml), the first C of open_clip's ImageNet class names with the template "a photo of a {}.", a batch of 4
random images (the official batch) and random labels, SGD as the official config (lr 0.01, momentum 0.9, weight decay
5e-4). Both paths start from the same prompts and images:

* **reference**: what the official ``CustomCLIP.forward`` computes per step: every class prompt at the full 77 tokens
  with the K prompts written after its EOT and the (C * 8, 77, 77) per-class mask (built, and copied to the device,
  every step), the image with the K prompts appended and the (197 + K)^2 mask, both through open_clip's own blocks
  (``nn.MultiheadAttention``) with gradients through every token; the logits as the loop over the K pairs; CE,
  backward, SGD step (``prompt_learning.backbone.read_only.masked_text`` / ``masked_image``).
* **ours**: :class:`prompt_learning.methods.rpo.RPO` as the engine trains it: the original text tokens run once per
  class set (untimed here, reported below) and the image tokens once per step without gradients; only the K prompt
  tokens of each class and image run with gradients, as queries against the originals' keys and values.

Each path runs in a forked process (peak RSS) for a warm-up step and ``--repeats`` timed ones; the losses of the same
steps on the two paths are compared.

    uv run scripts/benchmark.py --rpo --classes 100 --repeats 1 --out <scratch>.md
    uv run scripts/benchmark.py --rpo --rpo-model tiny_test --rpo-prompts 4 --classes 10 --repeats 1 --out <scratch>.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run directly, or imported by benchmark.py

import open_clip  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from benchmark import (  # noqa: E402
    Measurement,
    fmt,
    loss_difference,
    machine_line,
    measure,
    sync,
    timed_measurement,
    write_report,
)

from prompt_learning import ClassSet, FrozenCLIP, create_method  # noqa: E402
from prompt_learning.backbone.read_only import masked_image, masked_text  # noqa: E402
from prompt_learning.methods.rpo import RPO  # noqa: E402

BATCH = 4  # the official DATALOADER.TRAIN_X.BATCH_SIZE
SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}  # the official OPTIM (main_K24.yaml)


def build(n_classes: int, path: str, device: str, model: str, n_prompts: int
          ) -> tuple[RPO, ClassSet, torch.Tensor, torch.Tensor]:
    """The method (same prompts on both paths), the classes, a (B, 3, H, W) batch and its labels."""
    torch.manual_seed(0)
    backbone = FrozenCLIP(model, None).to(device)
    backbone.lean_blocks = backbone.truncate_text = path != "reference"  # the reference: open_clip's blocks, 77
    classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
    torch.manual_seed(1)
    method = create_method({"name": "rpo", "n_prompts": n_prompts}, backbone, classes).to(device).train()
    size = backbone.image_size
    images = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    labels = torch.randint(n_classes, (BATCH,), generator=torch.Generator().manual_seed(3)).to(device)
    return method, classes, images, labels


def reference_loss(method: RPO, ids: torch.Tensor, embeds: torch.Tensor, images: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
    """The official per-step loss: masked 77-token text (mask built every step), masked image, the loop over K."""
    backbone = method.backbone
    eot = ids.argmax(-1)  # (C,)
    _, text = masked_text(backbone.text, embeds, eot, method.text_prompt)  # (C, K, D)
    _, image = masked_image(backbone.vision, images, method.img_prompt)  # (B, K, D)
    text, image = F.normalize(text, dim=-1), F.normalize(image, dim=-1)
    logits = torch.zeros(images.shape[0], ids.shape[0], device=images.device)  # (B, C)
    for k in range(method.cfg.n_prompts):
        logits = logits + backbone.logit_scale * image[:, k] @ text[:, k].T
    return F.cross_entropy(logits / method.cfg.n_prompts, labels)


def step_seconds(n_classes: int, path: str, device: str, repeats: int, model: str, n_prompts: int) -> Measurement:
    """Median seconds of one training step of ``path`` (reference / ours), with the loss of every step run."""
    method, classes, images, labels = build(n_classes, path, device, model, n_prompts)
    extra: dict = {"losses": []}
    if path == "reference":  # cached once, as the official make_prompts does: token ids and embeddings
        ids = method.backbone.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in classes.names])  # (C, 77)
        with torch.no_grad():
            embeds = method.backbone.token_embeddings(ids)  # (C, 77, W)
    else:
        sync(device)
        start = time.perf_counter()
        states = method.class_states(classes)  # the original text tokens: once per class set
        sync(device)
        extra["text_states_seconds"] = time.perf_counter() - start
        extra["text_length"] = states.keys[0].shape[2]
    optimizer = torch.optim.SGD(list(method.parameters()), **SGD)

    def step() -> None:
        if path == "reference":
            loss = reference_loss(method, ids, embeds, images, labels)
        else:
            loss = method.loss(method(images, classes), labels)["ce"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        extra["losses"].append(loss.item())

    measured = timed_measurement(step, device, repeats)
    measured.extra = extra
    return measured


def rpo_table(args: argparse.Namespace) -> None:
    """Time both paths at each C of ``args.classes`` and write the Markdown section to ``args.out``."""
    setting = (args.rpo_model, args.rpo_prompts)
    ref_max = args.reference_max_classes or (100 if args.device == "cpu" else 10**9)
    header = "| C | reference s/step | reference peak | ours s/step | ours peak | ratio | max abs loss difference |"
    rows, notes = [], []
    print(header, flush=True)
    for n_classes in args.classes:
        ref = (measure(step_seconds, (n_classes, "reference", args.device, args.repeats, *setting), args.device)
               if n_classes <= ref_max else Measurement(error="not run"))
        ours = measure(step_seconds, (n_classes, "ours", args.device, args.repeats, *setting), args.device)
        ratio = f"{ref.seconds / ours.seconds:.2f}x" if ref.seconds and ours.seconds else "—"
        difference = loss_difference(ref, ours)
        rows.append(f"| {n_classes} | {fmt(ref.seconds, '.2f') if ref.seconds else ref.error} | "
                    f"{fmt(ref.peak_gib, '.1f', ' GiB')} | {fmt(ours.seconds, '.2f') if ours.seconds else ours.error} | "
                    f"{fmt(ours.peak_gib, '.1f', ' GiB')} | {ratio} | {difference} |")
        print(rows[-1], flush=True)
        notes.append(f"C={n_classes}: {fmt(ours.extra.get('text_states_seconds'), '.2f', ' s')} for "
                     f"{ours.extra.get('text_length', '—')} tokens per class")
    k = args.rpo_prompts
    lines = [
        f"## RPO training step ({machine_line(args.device)})", "",
        f"Command: `uv run scripts/benchmark.py {' '.join(sys.argv[1:])}` (`scripts/benchmark_rpo.py`). {args.rpo_model}"
        f" with random weights, K = {k} prompt pairs, the first C ImageNet class names in \"a photo of a {{}}.\", a "
        f"batch of {BATCH} random images with random labels, SGD (lr 0.01, momentum 0.9, weight decay 5e-4); both "
        f"fp32; median of {args.repeats} steps after one warm-up. A step: forward, cross-entropy, backward, SGD "
        "step.", "",
        "Reference: the official per-step computation (mlvlab/RPO `trainers/rpo.py`): C text sequences of 77 tokens "
        "with the K prompts after each EOT and the (C x heads, 77, 77) per-class mask built every step, the image "
        "with 197 + K tokens and its mask, open_clip's blocks with gradients through every token. Ours: "
        "`RPO` (`prompt_learning/backbone/read_only.py`): the original tokens without gradients (text once per "
        "class set, image once per step) and only the K prompt tokens with gradients, as queries against the "
        "originals' keys and values.", "",
        header, "|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
        "Loss difference: the largest |loss| difference over the same steps (warm-up included), same prompts, "
        "images and labels on both paths; the first step's loss in brackets. Peak: peak RSS of the forked process "
        "that builds the model and runs the steps (CPU), the CUDA allocator peak on a GPU. Ours' text pass over the "
        "original tokens, once per class set, untimed above: " + "; ".join(notes) + ".", ""]
    write_report(args.out, lines)


if __name__ == "__main__":
    import benchmark

    sys.argv.insert(1, "--rpo")
    benchmark.main()
