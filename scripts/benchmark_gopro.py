"""GOPro training step: the official computation (mainaksingha01/GOPro) against ours (``benchmark.py --gopro``).

ViT-B/16 with random weights (``pretrained=None``: the cost does not depend on them), GOPro's defaults (M=4 from
"a photo of a", style/content projectors on the 12 blocks, layer mixer, similarity projector), the first C of
open_clip's ImageNet class names, a batch of 4 training samples of 3 views each (the official batch; random
tensors made once, so that both paths see the same views: the official code's own augmentation of the batch inside
``forward`` is not timed), the method in train mode, SGD as the official config (lr 0.002, momentum 0.9, weight decay
5e-4). Both paths fp32, built from the same modules and seeds:

* **reference**: what the official ``CustomCLIP.forward`` computes: for each of the 3 views, the image encoder on the
  B images keeping every block's full output (B, 197, 768) (``nn.MultiheadAttention`` blocks), the token statistics
  and the shift, then one text-encoder call per image of its C prompts at the full 77 tokens; the loss, backward, step.
* **ours**: :class:`prompt_learning.methods.gopro.GOPro` as the engine trains it: one image-tower pass over the 3B
  views keeping only each block's (mu, sigma), and the 3B*C prompts in one text-tower call (Tier C: each view's
  start token + context once, the class suffixes in length buckets; lean blocks).

Each path runs in a forked process (peak RSS) for a warm-up step and ``--repeats`` timed ones; the losses of the
same steps on the two paths are compared (the largest absolute difference is reported).

    uv run scripts/benchmark.py --gopro --repeats 1 --out <scratch>.md  # C = 10 and 100 (reference at C <= 10 on a CPU)
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
    timed_measurement,
    write_report,
)

from prompt_learning import ClassSet, FrozenCLIP, create_method  # noqa: E402
from prompt_learning.methods.base import MethodOutput  # noqa: E402
from prompt_learning.methods.gopro import VIEWS, GOPro  # noqa: E402
from prompt_learning.prompts.style_content import token_statistics  # noqa: E402

BATCH = 4  # the official DATALOADER.TRAIN_X.BATCH_SIZE
SGD = {"lr": 0.002, "momentum": 0.9, "weight_decay": 5e-4}  # the official OPTIM


def build(n_classes: int, path: str, device: str, model: str) -> tuple[GOPro, ClassSet, torch.Tensor, torch.Tensor]:
    """The method (train mode) on a backbone set up for ``path``, the classes, the (B, 3, 3, H, W) views and labels."""
    torch.manual_seed(0)
    backbone = FrozenCLIP(model, None).to(device)
    backbone.truncate_text = backbone.share_text_prefix = backbone.lean_blocks = path != "reference"
    classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
    torch.manual_seed(1)
    method = create_method({"name": "gopro"}, backbone, classes).to(device).train()
    size = backbone.image_size
    views = torch.randn(BATCH, len(VIEWS), 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    labels = (torch.arange(BATCH) % n_classes).to(device)
    return method, classes, views, labels


def reference_losses(method: GOPro, classes: ClassSet, views: torch.Tensor, labels: torch.Tensor) -> dict:
    """The official per-step computation: per view the full block outputs and their statistics, then per image one
    text-encoder call of its C prompts at 77 tokens; the same loss terms."""
    features, text = [], []
    for v in range(len(VIEWS)):
        with torch.no_grad():
            f, states = method.backbone.encode_image_with_hidden_states(views[:, v])  # 12 x (B, 197, 768) kept
        shift = method.shift([token_statistics(h) for h in states])  # (B, W)
        ctx = method.context.ctx.unsqueeze(0) + shift.unsqueeze(1)  # (B, M, W)
        text.append(torch.stack([method.class_prompts.features_per_context(classes, ctx[b: b + 1])[0] for b in range(BATCH)]))  # (B, C, D)
        features.append(F.normalize(f.float(), dim=-1))  # (B, D)
    out = MethodOutput(method.logits(features[0], text[0]), features[0], text[0], classes)
    out.extras["view_text_features"] = torch.stack(text[1:])  # (2, B, C, D)
    out.extras["projected"] = torch.stack([method.sim_projector(features[0]), method.sim_projector(features[1])])
    return method.loss(out, labels)


def step_seconds(n_classes: int, path: str, device: str, repeats: int, model: str) -> Measurement:
    """Median seconds of one training step of ``path`` (reference / ours), with the loss of every step run."""
    method, classes, views, labels = build(n_classes, path, device, model)
    optimizer = torch.optim.SGD(list(method.parameters()), **SGD)
    losses: list[float] = []

    def step() -> None:
        terms = (reference_losses(method, classes, views, labels) if path == "reference"
                 else method.loss(method(views, classes), labels))
        loss = torch.stack(list(terms.values())).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    start = time.perf_counter()
    measured = timed_measurement(step, device, repeats)
    tokens = method.class_prompts.tokens(classes)
    measured.extra = {"losses": losses, "wall": time.perf_counter() - start, "prefix": tokens.shared_prefix,
                      "mean_suffix": float((tokens.eot + 1 - tokens.shared_prefix).float().mean()),
                      "text_length": int(tokens.eot.max()) + 1,
                      "context": method.backbone.context_length}
    return measured


def gopro_table(args: argparse.Namespace) -> None:
    """Time both paths at each C of ``args.classes`` and write the Markdown section to ``args.out``."""
    ref_max = args.reference_max_classes or (10 if args.device == "cpu" else 10**9)
    model = args.student_model  # ViT-B-16 unless named (tiny_test: a smoke test)
    header = ("| C | text prompts per step | tokens per prompt: reference → ours (prefix + mean suffix) | reference s/step | "
              "reference peak | ours s/step | ours peak | ratio | max abs loss difference |")
    rows = []
    print(header, flush=True)
    for n_classes in args.classes:
        ref = (measure(step_seconds, (n_classes, "reference", args.device, args.repeats, model), args.device)
               if n_classes <= ref_max else Measurement(error=f"not run (C > {ref_max} on this machine)"))
        ours = measure(step_seconds, (n_classes, "ours", args.device, args.repeats, model), args.device)
        ratio = f"{ref.seconds / ours.seconds:.2f}x" if ref.seconds and ours.seconds else "—"
        difference = loss_difference(ref, ours)
        x = ours.extra
        tokens = f"{x['context']} → {x['prefix']} + {x['mean_suffix']:.1f}" if x else "—"
        rows.append(f"| {n_classes} | {len(VIEWS) * BATCH * n_classes} | {tokens} | "
                    f"{fmt(ref.seconds, '.2f') if ref.seconds else ref.error} | "
                    f"{fmt(ref.peak_gib, '.1f', ' GiB') if ref.seconds else '—'} | "
                    f"{fmt(ours.seconds, '.2f') if ours.seconds else ours.error} | {fmt(ours.peak_gib, '.1f', ' GiB')} | "
                    f"{ratio} | {difference} |")
        print(rows[-1], flush=True)
    lines = [
        f"## GOPro training step ({machine_line(args.device)})", "",
        f"Command: `uv run scripts/benchmark.py {' '.join(sys.argv[1:])}` (`scripts/benchmark_gopro.py`). {model} with "
        f"random weights, GOPro's defaults, the first C ImageNet class names, a batch of {BATCH} samples x 3 views "
        "(random tensors made once: the official in-forward augmentation is not timed), train mode, SGD (lr 0.002, "
        f"momentum 0.9, weight decay 5e-4); both fp32; median of {args.repeats} steps after one warm-up. A step: "
        "forward of the 3 views, the 4 loss terms, backward, SGD step.", "",
        "Reference: the official `CustomCLIP.forward`: per view an image-encoder call keeping every block's full "
        "output, then per image one text-encoder call of its C prompts at 77 tokens (`nn.MultiheadAttention` blocks): "
        "3 x B calls. Ours: one image-tower pass over the 3B views keeping each block's token mean and std only, the "
        "3B x C prompts in one text-tower call (Tier C, lean blocks).", "",
        header, "|---:|---:|---|---:|---:|---:|---:|---:|---:|", *rows, "",
        "Loss difference: the largest |loss| difference over the same steps (warm-up included) on the two paths, same "
        "weights and views; the first step's loss in brackets. Peak: peak RSS of the forked process that builds the "
        "model and runs the steps on the CPU, the CUDA allocator peak on a GPU.", ""]
    write_report(args.out, lines)


if __name__ == "__main__":
    import benchmark

    sys.argv.insert(1, "--gopro")
    benchmark.main()
