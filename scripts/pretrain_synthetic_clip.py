"""Reproduce the packaged ``tiny_synthetic`` CLIP weights (prompt_learning/backbone/weights/).

A 3-layer, width-96 CLIP of open_clip's own architecture (``tiny_synthetic.json``), trained from
random init with a CLIP-style image->caption cross-entropy on the ``pretrain`` domain of the synthetic
dataset, using captions of the 48 classes in ``PRETRAIN_CLASSES`` only (the 16 held-out colour x shape
combinations are never seen). Saved in fp16 (the vocabulary table dominates the size) to stay
under 15 MB; load it with ``backbone=tiny_synthetic``.

    uv run scripts/pretrain_synthetic_clip.py [--steps 1000] [--out path.safetensors]
"""

from __future__ import annotations

import argparse
import math
import random
import time

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from prompt_learning.backbone.tiny import PACKAGED_MODELS, WEIGHTS_DIR, register_tiny_models
from prompt_learning.data.synthetic import CLASSNAMES, PRETRAIN_CLASSES, render

# Captions never use "a photo of a {}." (the default zero-shot template): as with web-scale CLIP, the
# hand-written template is only an approximation of how the training text described the images, which
# is the gap that learned context closes.
CAPTIONS = ("a {}.", "a rendering of a {}.", "a picture of the {}.", "{}", "a {} shape.", "a drawing of a {}.",
            "the {}.", "an image showing a {}.", "a small {}.")


def evaluate(model, tokenizer, gen: torch.Generator, classes: list[str], mean, std, size: int) -> float:
    """Zero-shot accuracy on 512 rendered images of ``classes`` (task domain), among those classes."""
    labels = torch.tensor([CLASSNAMES.index(c) for c in classes])
    pick = torch.randint(len(classes), (512,), generator=gen)
    images = (render(labels[pick], size, gen, "task") - mean) / std
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer([f"a photo of a {c}." for c in classes])), dim=-1)  # (C, D)
        pred = (F.normalize(model.encode_image(images), dim=-1) @ text.T).argmax(-1)
    return (pred == pick).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="tiny_synthetic", choices=PACKAGED_MODELS,
                        help="tiny_synthetic (the default backbone) or tiny_synthetic_small (PromptKD's student)")
    parser.add_argument("--out", default=None, help="default: the packaged file of --model")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    register_tiny_models()
    out = args.out or str(WEIGHTS_DIR / f"{args.model}.safetensors")
    model = open_clip.create_model(args.model, pretrained=None)
    tokenizer = open_clip.get_tokenizer(args.model)
    size = model.visual.image_size[0]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    seen = torch.tensor([CLASSNAMES.index(c) for c in PRETRAIN_CLASSES])
    gen = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = max(1, args.steps // 16)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    start = time.time()
    for step in range(args.steps):
        pick = torch.randint(len(seen), (args.batch_size,), generator=gen)
        images = (render(seen[pick], size, gen, "pretrain") - mean) / std  # (B, 3, S, S)
        captions = [random.choice(CAPTIONS).format(c) for c in PRETRAIN_CLASSES]
        image_features = F.normalize(model.encode_image(images), dim=-1)  # (B, D)
        text_features = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)  # (48, D)
        logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T  # (B, 48)
        loss = F.cross_entropy(logits, pick)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)

    model.eval()
    unseen = sorted(set(CLASSNAMES) - set(PRETRAIN_CLASSES))
    eval_gen = torch.Generator().manual_seed(12345)
    print(f"zero-shot on the task domain: 64-way {evaluate(model, tokenizer, eval_gen, list(CLASSNAMES), mean, std, size):.3f}, "
          f"16-way unseen {evaluate(model, tokenizer, eval_gen, unseen, mean, std, size):.3f}")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, out, metadata={"model": args.model, "steps": str(args.steps), "seed": str(args.seed)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
