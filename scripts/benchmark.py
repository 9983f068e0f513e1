"""Side-by-side speed of our computation against the official-style one, in one process.

So far it measures Tier B (performance.md): a CoOp training step with the text tower run on the full
77-token context (what the official trainers compute) against the same step run only up to the last
EOT of the class set (ours, exact). ViT-B/16 with random weights (pretrained=None) and ImageNet class
names from open_clip; image features are precomputed (identical in both paths) so the ratio isolates
the text side, where CoOp spends its step.

    uv run scripts/benchmark.py --classes 10 100 --repeats 3 --out benchmarks/tier_b_cpu.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from prompt_learning import ClassSet, FrozenCLIP, create_method
from prompt_learning.files import atomic_write_bytes


def step_seconds(method, classes: ClassSet, image_features: torch.Tensor, labels: torch.Tensor, repeats: int) -> float:
    """Median wall time of forward + backward of the CoOp loss over ``classes``."""
    times = []
    for _ in range(repeats + 1):  # the first call warms up (tokenisation, allocator)
        start = time.perf_counter()
        text = method.encode_classes(classes)  # (C, D)
        logits = method.backbone.logit_scale * image_features @ text.T  # (B, C)
        F.cross_entropy(logits, labels).backward()
        times.append(time.perf_counter() - start)
        method.zero_grad()
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", type=int, default=[10, 100])
    parser.add_argument("--n-ctx", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/tier_b_cpu.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = FrozenCLIP("ViT-B-16", None)
    image_features = F.normalize(torch.randn(args.batch, backbone.embed_dim), dim=-1)  # (B, D)
    rows = []
    for n_ctx in args.n_ctx:
        for n_classes in args.classes:
            classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
            method = create_method({"name": "coop", "n_ctx": n_ctx}, backbone, classes)
            labels = torch.arange(args.batch) % n_classes
            timings = {}
            for truncate in (False, True):
                backbone.truncate_text = truncate
                timings[truncate] = step_seconds(method, classes, image_features, labels, args.repeats)
            length = int(method.class_prompts.tokens(classes).eot.max()) + 1
            rows.append(f"| CoOp M={n_ctx} | {n_classes} | 77 -> {length} | {timings[False]:.2f} | {timings[True]:.2f} | "
                        f"{timings[False] / timings[True]:.2f}x |")
            print(rows[-1], flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU"
    table = "\n".join([
        f"# Tier B benchmark ({machine})", "",
        f"Command: `uv run scripts/benchmark.py {' '.join(sys.argv[1:])}` (batch {args.batch}, median of {args.repeats} steps after one "
        f"warm-up; ViT-B/16 random weights, ImageNet class names; text encoder forward + backward).", "",
        "| method | classes | text tokens | official-style s/step | ours s/step | ratio |",
        "|---|---:|---:|---:|---:|---:|", *rows, ""])
    print(table)
    atomic_write_bytes(Path(args.out), table.encode())


if __name__ == "__main__":
    main()
