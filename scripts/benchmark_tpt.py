"""TPT per test image: the official computation (azshue/TPT) against ours, side by side (``benchmark.py --tpt``).

ViT-B/16 with random weights (``pretrained=None``), the first C of open_clip's ImageNet class names, one test
image as 64 views (the eval view + 63; random pixels: the cost does not depend on them), TPT's default prompt
(CoOp's 4-token context from "a photo of a"), one AdamW step. Both paths are built from the same modules:

* **reference**: what the official ``test_time_adapt_eval`` computes per image: reset the context and the
  optimiser; the 64 views through the image encoder (no grad) and the C prompts through the text encoder at
  77 tokens (with grad, ``nn.MultiheadAttention`` blocks); logits (64, C); the 6 lowest-entropy views' marginal
  entropy; backward; AdamW step; then ``model(image)``: the image encoder on the eval view and the text encoder
  over the C prompts at 77 tokens again (no grad). On a GPU: fp16 weights, fp16 autocast and a GradScaler.
* **ours**: :func:`prompt_learning.methods.stages.adapted_logits`, what the engine runs per test image, on the
  default backbone (Tier C text, lean blocks; bf16 on a GPU).

Both get the same views and weights; the largest difference of their final (1, C) logits is printed. The
reference runs only where its peak, extrapolated from its text side alone at C=10 and 40 (forward + backward
at 77 tokens, in forked processes), leaves 1 GiB of the memory available (``--reference-max-classes`` caps it
further). Image vs text FLOPs per image follow ``benchmark.encoder_flops``.

    uv run scripts/benchmark.py --tpt --repeats 1 --out <scratch>.md  # C = 100 and 1000 (benchmarks/cpu.md)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run directly, or imported by benchmark.py

import open_clip  # noqa: E402
import torch  # noqa: E402
from benchmark import (  # noqa: E402
    GIB,
    Measurement,
    autocast,
    build_backbone,
    encoder_flops,
    fmt,
    machine_line,
    measure,
    sync,
    timed,
    write_report,
)

from prompt_learning import ClassSet, create_method  # noqa: E402
from prompt_learning.methods.stages import adapted_logits  # noqa: E402
from prompt_learning.methods.tpt import confident_views, marginal_entropy  # noqa: E402

VIEWS = 63  # + the eval view: the official batch of 64
MARGIN = 1 * GIB  # left free for the machine's other processes when deciding whether the reference may run
PATCHES = 196 * 3 * 16 * 16 * 768 * 2  # ViT-B/16 patch embedding of one image


def _setup(n_classes: int, device: str, reference: bool):
    backbone = build_backbone(device, reference)
    classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
    method = create_method({"name": "tpt", "views": VIEWS}, backbone, classes).to(device).eval()
    views = torch.randn(1 + VIEWS, 3, 224, 224, generator=torch.Generator().manual_seed(4)).to(device)
    return method, classes, views  # views: (64, 3, H, W), the eval view first


def _clock(device: str) -> float:
    sync(device)
    return time.perf_counter()


def reference_image(method, views, classes, device: str, scaler) -> tuple[torch.Tensor, float]:
    """The official per-image computation: (1, C) logits of the eval view and the seconds in the image encoder."""
    base = method.base
    method.reset()  # the official model.reset() and optimizer.load_state_dict(optim_state)
    optimizer = method.optimizer()
    with autocast(device, reference=True):
        start = _clock(device)
        with torch.no_grad():
            image_features = base.encode_images(views)  # (64, D)
        image_seconds = _clock(device) - start
        logits = base.logits(image_features, base.encode_classes(classes))  # (64, C): 77-token text, with grad
        loss = marginal_entropy(logits[confident_views(logits, method.cfg.selection_p)])
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    with torch.no_grad(), autocast(device, reference=True):  # model(image): both encoders again
        start = _clock(device)
        features = base.encode_images(views[:1])  # (1, D)
        image_seconds += _clock(device) - start
        return base.forward_features(features, classes).logits.float(), image_seconds  # (1, C)


def tpt_image_seconds(n_classes: int, path: str, device: str, repeats: int) -> Measurement:
    """Seconds per test image of ``path`` (reference / ours), with its final logits and tuned context."""
    reference = path == "reference"
    method, classes, views = _setup(n_classes, device, reference)
    scaler = torch.amp.GradScaler("cuda", init_scale=1000) if reference and device == "cuda" else None
    last: dict = {}

    def one_image() -> None:
        if reference:
            last["logits"], last["image_seconds"] = reference_image(method, views, classes, device, scaler)
        else:
            with autocast(device, reference=False):
                last["logits"] = adapted_logits(method, views, classes).float()  # (1, C)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        seconds = timed(one_image, device, repeats)
    except torch.OutOfMemoryError:
        return Measurement(error="out of memory")
    peak = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None
    tokens = method.base.class_prompts.tokens(classes)
    return Measurement(seconds, peak, extra={
        "logits": last["logits"].cpu().tolist(), "image_seconds": last.get("image_seconds"),  # lists: a pipe
        "context": [p.detach().float().cpu().tolist() for p in method.base.test_time_parameters()],
        "text_length": int(tokens.eot.max()) + 1, "prefix": tokens.shared_prefix,
        "suffixes": (tokens.eot + 1 - tokens.shared_prefix).tolist()})


def reference_text_probe(n_classes: int, device: str) -> Measurement:
    """The reference's text side alone at ``n_classes`` (77 tokens, forward + backward of the entropy loss on
    fixed image features): bytes per class prompt it keeps for backward (weights excluded); the peak comes back."""
    method, classes, _ = _setup(n_classes, device, reference=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    image_features = torch.nn.functional.normalize(torch.randn(1 + VIEWS, method.backbone.embed_dim), dim=-1)
    frozen = {t.untyped_storage().data_ptr() for t in [*method.backbone.parameters(), *method.backbone.buffers(),
                                                       *method.parameters()]}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in frozen:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(device, reference=True):
        logits = method.base.logits(image_features.to(device), method.base.encode_classes(classes))  # (64, C)
        loss = marginal_entropy(logits[confident_views(logits, method.cfg.selection_p)])
    loss.backward()  # the graph kept every packed tensor alive until here
    peak = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None
    return Measurement(peak_gib=peak, extra={"kept": sum(kept.values()) / n_classes})


PROBES = (10, 40)  # class counts of the two text-only probes: the reference's peak grows linearly in C between


def reference_peak_estimate(device: str) -> tuple[Callable[[int], float] | None, str]:
    """Peak bytes of the reference at C, extrapolated from the text-only probes, and a line saying how."""
    lo, hi = (measure(reference_text_probe, (c, device), device) for c in PROBES)
    if lo.peak_gib is None or hi.peak_gib is None or not hi.extra:
        return None, f"reference memory probe failed: {lo.error or hi.error}"
    slope = (hi.peak_gib - lo.peak_gib) * GIB / (PROBES[1] - PROBES[0])  # bytes per class prompt

    def estimate(n_classes: int) -> float:
        return hi.peak_gib * GIB + slope * (n_classes - PROBES[1])

    return estimate, (f"Reference memory probe (its text side alone, forward + backward at 77 tokens): peak "
                      f"{lo.peak_gib:.2f} GiB at C={PROBES[0]}, {hi.peak_gib:.2f} GiB at C={PROBES[1]}: "
                      f"{slope / 2**20:.1f} MiB per class prompt, of which {hi.extra['kept'] / 2**20:.1f} MiB are "
                      f"activations kept for backward (`saved_tensors_hooks`, weights excluded).")


def available_bytes(device: str) -> float:
    if device == "cuda":
        return float(torch.cuda.mem_get_info()[0])
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return float(meminfo["MemAvailable"].split()[0]) * 1024


def flops_per_image(info: dict, n_classes: int) -> tuple[float, float, float]:
    """(image, reference text, ours text) FLOPs per test image: 65 frozen image forwards on both paths; text
    forward + backward to the context, then forward again (the final scoring); ours at Tier C (the shared
    prefix once, each class's suffix attending to it)."""
    image = (1 + VIEWS + 1) * (encoder_flops(197, 768, 12, False) + PATCHES)
    reference = n_classes * (encoder_flops(77, 512, 12, True) + encoder_flops(77, 512, 12, False))
    p, ours = info["prefix"], 0.0
    for backward in (True, False):
        ours += encoder_flops(p, 512, 12, backward)
        ours += sum(encoder_flops(s, 512, 12, backward) + (3 if backward else 1) * 4 * s * p * 512 * 12
                    for s in info["suffixes"])
    return image, reference, ours


def tpt_table(args) -> None:
    estimate, probe_line = reference_peak_estimate(args.device)
    available = available_bytes(args.device)
    print(probe_line, f"{available / GIB:.1f} GiB available.", flush=True)
    rows, split_rows, checks = [], [], []
    header = ("| C | text tokens: 77 → B → C (prefix + mean suffix) | reference s/image | reference peak | "
              "ours s/image | ours peak | ratio |")
    print(header, flush=True)
    for n_classes in args.classes:
        need = estimate(n_classes) if estimate else None
        cap = args.reference_max_classes
        if cap is not None and n_classes > cap:
            ref = Measurement(error="not run (--reference-max-classes)")
        elif need is None or need + MARGIN > available:
            ref = Measurement(error=f"not run: needs ~{need / GIB:.1f} GiB (estimate), {available / GIB:.1f} GiB "
                                    f"available" if need else "not run: no memory estimate")
        else:
            ref = measure(tpt_image_seconds, (n_classes, "reference", args.device, args.repeats), args.device)
        ours = measure(tpt_image_seconds, (n_classes, "ours", args.device, args.repeats), args.device)
        info = ours.extra or ref.extra
        tokens = (f"77 → {info['text_length']} → {info['prefix']} + "
                  f"{sum(info['suffixes']) / len(info['suffixes']):.1f}" if info else "—")
        ratio = f"{ref.seconds / ours.seconds:.2f}x" if ref.seconds and ours.seconds else "—"
        rows.append(f"| {n_classes} | {tokens} | {fmt(ref.seconds) if ref.seconds else ref.error} | "
                    f"{fmt(ref.peak_gib, '.1f', ' GiB') if ref.seconds else '—'} | "
                    f"{fmt(ours.seconds) if ours.seconds else ours.error} | {fmt(ours.peak_gib, '.1f', ' GiB')} | "
                    f"{ratio} |")
        print(rows[-1], flush=True)
        if info:
            image, text_ref, text_ours = flops_per_image(info, n_classes)
            image_s = ref.extra.get("image_seconds")
            bound = f"{ref.seconds / image_s:.2f}x" if ref.seconds and image_s else "—"
            split_rows.append(
                f"| {n_classes} | {image / 1e12:.2f} | {text_ref / 1e12:.2f} | {text_ours / 1e12:.3f} | "
                f"{(image + text_ref) / (image + text_ours):.2f}x | {fmt(image_s)} | {bound} | "
                f"{fmt(need and need / GIB, '.1f', ' GiB')} |")
        if ref.extra and ours.extra:
            ref_logits, ours_logits = torch.tensor(ref.extra["logits"]), torch.tensor(ours.extra["logits"])
            logit_diff = float((ref_logits - ours_logits).abs().max())
            ctx_diff = max(float((torch.tensor(a) - torch.tensor(b)).abs().max())
                           for a, b in zip(ref.extra["context"], ours.extra["context"], strict=True))
            checks.append(f"| {n_classes} | {logit_diff:.2e} | {float(ref_logits.abs().max()):.2f} | "
                          f"{ctx_diff:.2e} |")
            print(checks[-1], flush=True)
    lines = [
        f"## TPT, per test image ({machine_line(args.device)})", "",
        f"Command: `uv run scripts/benchmark.py {' '.join(sys.argv[1:])}` (`scripts/benchmark_tpt.py`). One test image: "
        f"{1 + VIEWS} views, CoOp's 4-token context from \"a photo of a\", one AdamW step, then the eval view scored; "
        f"median of {args.repeats} images after one warm-up. Reference: the official per-image computation, 77-token "
        "text both times. Ours: `adapted_logits`, as the engine runs it. Peak: "
        + ("CUDA allocator peak." if args.device == "cuda" else "peak RSS of a forked process that builds the model "
           "and runs the measurement."), "",
        header, "|---:|---|---:|---:|---:|---:|---:|", *rows, "",
        "Cost split per test image (TFLOP, `encoder_flops`; the image side is 65 frozen ViT-B/16 forwards on both "
        "paths). Ratio bound: the reference's time over its own time in the image encoder, the ratio if ours' text "
        "cost nothing. Reference peak, estimate: from the memory probe below, which decides whether it runs.", "",
        "| C | image | text, reference | text, ours | FLOP ratio | reference s in the image encoder | ratio bound | "
        "reference peak, estimate |", "|---:|---:|---:|---:|---:|---:|---:|---:|", *split_rows, "",
        "Same views and weights on both paths: final logits and the tuned context.", "",
        "| C | max abs logit difference | max abs logit | max abs context difference |", "|---:|---:|---:|---:|",
        *(checks or ["| — | no reference ran | | |"]), "", probe_line, ""]
    write_report(args.out, lines)


if __name__ == "__main__":
    import benchmark

    sys.argv.insert(1, "--tpt")
    benchmark.main()
