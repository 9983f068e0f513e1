"""PromptKD training step: the official computation (zhengli97/PromptKD) against ours (``benchmark.py --promptkd``).

A ViT-B/16 student (IVLP vision prompts 4 tokens x 9 layers and the projector) distils a ViT-L/14 IVLP teacher
(4+4 tokens, depth 9), both with random weights (``pretrained=None``: the cost does not depend on them), over the
first C of open_clip's ImageNet class names; a batch of 8 random images (the official batch) at the student's input
size, the student in train mode, SGD as the official config (lr 0.005, momentum 0.9, weight decay 5e-4). Both
paths are built from the same modules and seeds:

* **reference**: what the official trainer's ``forward_backward`` computes per batch: the teacher's prompt learner
  and text encoder over **all** C classes (77 tokens, ``nn.MultiheadAttention`` blocks, no grad), the teacher's image
  encoder on the batch, the student's logits against those text features, ``kd_weight`` x the KD loss, backward,
  SGD step.
* **ours**: :class:`prompt_learning.methods.promptkd.PromptKD` as the engine trains it: the teacher's class features
  are computed once (``prepare``, the buffer ``teacher_text_features``, not timed) and a step runs the student and
  the teacher's image tower once (Tier C text, lean blocks: the framework's defaults).

Each path runs in a forked process (peak RSS) for a warm-up step and ``--repeats`` timed ones; the losses of the
same steps on the two paths are compared (the largest absolute difference is reported).

    uv run scripts/benchmark.py --promptkd --out <scratch>.md  # C = 100 and 1000 (ViT-L/14 teacher: slow on a CPU)
    uv run scripts/benchmark.py --promptkd --student-model tiny_test --teacher-model tiny_test_wide --classes 10 \
        --repeats 1 --out <scratch>.md  # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run directly, or imported by benchmark.py

import open_clip  # noqa: E402
import torch  # noqa: E402
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
from prompt_learning.methods.base import PromptMethod  # noqa: E402
from prompt_learning.methods.promptkd import PromptKD, kd_loss  # noqa: E402

BATCH = 8  # the official DATALOADER.TRAIN_X.BATCH_SIZE
SGD = {"lr": 0.005, "momentum": 0.9, "weight_decay": 5e-4}  # the official OPTIM
TEACHER = {"name": "ivlp", "n_ctx_text": 4, "n_ctx_vision": 4, "depth_text": 9, "depth_vision": 9}
STUDENT = {"name": "promptkd", "n_ctx_vision": 4, "depth_vision": 9}


class _TrainClasses:
    """The part of ``StageData`` that ``PromptKD.prepare`` reads."""

    def __init__(self, classes: ClassSet) -> None:
        self.train_classes = classes


def _backbone(model_name: str, seed: int, device: str, reference: bool) -> FrozenCLIP:
    """Frozen CLIP with random weights from ``seed``; the reference runs the full 77-token text with
    ``nn.MultiheadAttention`` blocks, ours the framework's defaults (Tier C text, lean blocks)."""
    torch.manual_seed(seed)
    backbone = FrozenCLIP(model_name, None).to(device)
    backbone.truncate_text = backbone.share_text_prefix = backbone.lean_blocks = not reference
    return backbone


def build(n_classes: int, path: str, device: str, student_model: str,
          teacher_model: str) -> tuple[PromptKD, PromptMethod, ClassSet, torch.Tensor]:
    """The student (teacher injected; ``prepare`` run on ours), the teacher, the classes and the (B, 3, H, W) batch."""
    reference = path == "reference"
    classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
    teacher_backbone = _backbone(teacher_model, 0, device, reference)
    torch.manual_seed(2)
    teacher = create_method(TEACHER, teacher_backbone, classes).to(device).requires_grad_(False).eval()
    student_backbone = _backbone(student_model, 1, device, reference)
    torch.manual_seed(3)
    student = create_method({**STUDENT, "teacher_dim": teacher_backbone.embed_dim}, student_backbone, classes)
    student = student.to(device).train()
    object.__setattr__(student, "_teacher", teacher)  # what loading ``teacher_export`` would hold
    size = student_backbone.image_size
    images = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(4)).to(device)
    return student, teacher, classes, images


def reference_loss(student: PromptKD, teacher: PromptMethod, classes: ClassSet, images: torch.Tensor) -> torch.Tensor:
    """The official per-batch loss: the teacher's text over all classes and its logits on the batch (no grad),
    then the student's logits against the same text features and ``kd_weight`` x the KD loss."""
    with torch.no_grad():
        text_features = teacher.encode_classes(classes).float()  # (C, D_T): every batch
        teacher_logits = teacher.forward_features(teacher.encode_images(images), classes, text_features).logits
    student_logits = student.forward_features(student.encode_images(images), classes, text_features).logits  # (B, C)
    return student.cfg.kd_weight * kd_loss(student_logits, teacher_logits, student.cfg.temperature)


def step_seconds(n_classes: int, path: str, device: str, repeats: int, student_model: str,
                 teacher_model: str) -> Measurement:
    """Median seconds of one training step of ``path`` (reference / ours), with the loss of every step run."""
    student, teacher, classes, images = build(n_classes, path, device, student_model, teacher_model)
    extra: dict = {"losses": []}
    if path == "ours":
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            student.prepare(_TrainClasses(classes))  # fills teacher_text_features, once
        sync(device)
        extra["prepare_seconds"] = time.perf_counter() - start
    optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], **SGD)
    labels = torch.zeros(BATCH, dtype=torch.long, device=device)  # not read: KD only

    def step() -> None:
        if path == "reference":
            loss = reference_loss(student, teacher, classes, images)
        else:
            out = student(images, classes)
            loss = student.loss(out, labels)["kd"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        extra["losses"].append(loss.item())

    measured = timed_measurement(step, device, repeats)
    measured.extra = extra
    return measured


def promptkd_table(args: argparse.Namespace) -> None:
    """Time both paths at each C of ``args.classes`` and write the Markdown section to ``args.out``."""
    models = (args.student_model, args.teacher_model)
    header = "| C | reference s/step | ours s/step | ratio (reference / ours) | max abs loss difference |"
    rows, notes = [], []
    print(header, flush=True)
    for n_classes in args.classes:
        ref, ours = (measure(step_seconds, (n_classes, path, args.device, args.repeats, *models), args.device)
                     for path in ("reference", "ours"))
        ratio = f"{ref.seconds / ours.seconds:.2f}x" if ref.seconds and ours.seconds else "—"
        difference = loss_difference(ref, ours)
        rows.append(f"| {n_classes} | {fmt(ref.seconds, '.3f') if ref.seconds else ref.error} | "
                    f"{fmt(ours.seconds, '.3f') if ours.seconds else ours.error} | {ratio} | {difference} |")
        print(rows[-1], flush=True)
        notes.append(f"C={n_classes}: ours' prepare {fmt(ours.extra.get('prepare_seconds'), '.2f', ' s')}, "
                     f"peak {fmt(ref.peak_gib, '.1f', ' GiB')} (reference) and {fmt(ours.peak_gib, '.1f', ' GiB')} "
                     "(ours)")
    lines = [
        f"## PromptKD training step ({machine_line(args.device)})", "",
        f"Command: `uv run scripts/benchmark.py {' '.join(sys.argv[1:])}` (`scripts/benchmark_promptkd.py`). "
        f"Student {args.student_model} (IVLP vision prompts 4 x 9, projector), teacher {args.teacher_model} IVLP "
        f"4+4 depth 9, random weights, the first C ImageNet class names, a batch of {BATCH} random images, student "
        f"in train mode, SGD (lr 0.005, momentum 0.9, weight decay 5e-4); both fp32; median of {args.repeats} steps "
        "after one warm-up. A step: student forward, the teacher's logits, KD loss (x 1000), backward, SGD step.", "",
        "The reference recomputes what the official trainer does every batch: the teacher's text features for all C "
        "classes (prompt learner + text encoder at 77 tokens, no grad) before the teacher's image encoder and the "
        "student; ours computes them once in `prepare` (untimed, below) and per step runs only the teacher's image "
        "tower and the student (Tier C text, lean blocks).", "",
        header, "|---:|---:|---:|---:|---:|", *rows, "",
        "Loss difference: the largest |loss| difference over the same steps (warm-up included) on the two paths, "
        "same weights and images; the first step's loss in brackets. " + "; ".join(notes)
        + " (peak: peak RSS of the forked process that builds the models and runs the steps on the CPU, the CUDA "
        "allocator peak on a GPU).", ""]
    write_report(args.out, lines)


if __name__ == "__main__":
    import benchmark

    sys.argv.insert(1, "--promptkd")
    benchmark.main()
