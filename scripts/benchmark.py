"""Side-by-side speed of our computation against the official-style one, in one run (docs/performance.md).

For CoOp (M=4, 16), CoCoOp, KgCoOp, MaPLe and PromptSRC on ViT-B/16 with random weights
(``pretrained=None``) and ImageNet's class names, it times one training step (forward, the method's
losses, backward) on two paths built from the same modules:

* **reference**: what the official trainers compute: every class prompt through the text tower at the
  full 77 tokens every step, the frozen image encoder on every step, CoCoOp's per-image loop (one
  text-tower call of C prompts per image, all graphs kept until backward), fp16 weights and autocast on
  a GPU (their ``PREC: fp16``), fp32 on the CPU.
* **ours**: the defaults of this framework: text run up to the last EOT (Tier B) with the shared
  start-token + context prefix encoded once and the class suffixes in length buckets (Tier C), CoCoOp's
  B*C prompts in one call, standard blocks called through ``attention_block`` (one fused attention call
  instead of ``nn.MultiheadAttention``'s general path), bf16 weights (cast once) and autocast on a GPU.
* **ours, cached views** (text-only methods): the same step fed frozen image features, as training with
  ``data.feature_cache.train_views=K`` does (the image encoder is run K times per image before training).

It also times evaluation (CoOp M=4, C=100, 200 images in batches of 100): the reference re-encodes the
class prompts for every batch; ours encodes them once; a re-evaluation reads the image features cached by
the first pass. Peak memory: CUDA's allocator peak on a GPU; on the CPU each measurement runs in a forked
child process and reports that process's peak RSS (the whole process: model, activations, allocator).

    uv run scripts/benchmark.py --out benchmarks/cpu.md                       # this machine (2 cores)
    uv run scripts/benchmark.py --device cuda --repeats 5 --out benchmarks/h100.md
    uv run scripts/benchmark.py --device cuda --compile reduce-overhead --out benchmarks/h100_<mode>.md
    uv run scripts/benchmark.py --count-ops --classes 100 --plan-for cuda --out benchmarks/ops.md  # launches
    uv run scripts/benchmark.py --tpt --repeats 1 --out <scratch>.md  # TPT per test image (benchmark_tpt.py)
    uv run scripts/benchmark.py --promptkd --out <scratch>.md  # PromptKD training step (benchmark_promptkd.py)
    uv run scripts/benchmark.py --gopro --repeats 1 --out <scratch>.md  # GOPro training step (benchmark_gopro.py)
    uv run scripts/benchmark.py --rpo --repeats 1 --out <scratch>.md  # RPO training step (benchmark_rpo.py)
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

from prompt_learning import ClassSet, FrozenCLIP, create_method
from prompt_learning.backbone import towers
from prompt_learning.backbone.towers import COMPILE_MODES
from prompt_learning.files import atomic_write_bytes

PEAK_BF16_TFLOPS = 800.0  # H100 dense bf16 GEMM, measured (798 on an 8192^3 matmul, rounded)
GIB = 2**30


@dataclass(frozen=True)
class Case:
    label: str
    method: dict
    batch: int
    text_only: bool  # the image encoder is frozen: a cached-view step exists
    prompted_vision_tokens: int = 0  # extra image tokens (MaPLe 2, PromptSRC 4) for the FLOP count
    frozen_image_pass: bool = False  # PromptSRC also runs the frozen image encoder every step


CASES = {
    "coop4": Case("CoOp M=4", {"name": "coop", "n_ctx": 4}, 32, True),
    "coop16": Case("CoOp M=16", {"name": "coop", "n_ctx": 16}, 32, True),
    "cocoop": Case("CoCoOp", {"name": "cocoop"}, 4, True),
    "kgcoop": Case("KgCoOp", {"name": "kgcoop"}, 32, True),
    "maple": Case("MaPLe", {"name": "maple"}, 4, False, 2),
    # One template for the frozen text target keeps set-up short; it is computed once, outside the step.
    "promptsrc": Case("PromptSRC", {"name": "promptsrc", "templates": ["dataset"]}, 4, False, 4, True),
}


# -- FLOP model (docs/performance.md): linear 24 d^2 per token per layer, attention 4 L^2 d per sequence ----------
def encoder_flops(tokens: int, width: int, layers: int, with_backward: bool) -> float:
    linear, attention = 24 * tokens * width**2 * layers, 4 * tokens**2 * width * layers
    return (2 * linear + 3 * attention) if with_backward else (linear + attention)  # frozen: no weight grads


def tier_b_step_flops(case: Case, n_classes: int, text_length: int) -> float:
    """FLOPs one training step needs at Tier B (text cut at the longest prompt), ViT-B/16."""
    patches = 196 * 3 * 16 * 16 * 768 * 2
    text = n_classes * encoder_flops(text_length, 512, 12, True)
    if case.method["name"] == "cocoop":
        text *= case.batch  # one set of C prompts per image
    if case.prompted_vision_tokens:
        image = case.batch * (encoder_flops(197 + case.prompted_vision_tokens, 768, 12, True) + patches)
    else:
        image = case.batch * (encoder_flops(197, 768, 12, False) + patches)
    if case.frozen_image_pass:
        image += case.batch * (encoder_flops(197, 768, 12, False) + patches)
    return image + text


# -- one measurement ---------------------------------------------------------------------------------------------
@dataclass
class Measurement:
    seconds: float | None = None
    peak_gib: float | None = None
    error: str = ""
    extra: dict = field(default_factory=dict)


COMPILE_MODE: str | None = None  # --compile: our paths run the towers' block loops under torch.compile


def build_backbone(device: str, reference: bool) -> FrozenCLIP:
    torch.manual_seed(0)
    backbone = FrozenCLIP("ViT-B-16", None).to(device)
    backbone.truncate_text = backbone.share_text_prefix = backbone.lean_blocks = not reference
    if device == "cuda":
        backbone.cast_frozen_weights(torch.float16 if reference else torch.bfloat16)
    if COMPILE_MODE and not reference:
        backbone.compile_towers(COMPILE_MODE)  # compiled during the warm-up step, which is not timed
    return backbone


def autocast(device: str, reference: bool):
    if device != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if reference else torch.bfloat16)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


FIRST_CALL_SECONDS: list[float] = []  # the warm-up call of the last timed(): where torch.compile compiles


def timed(fn: Callable[[], None], device: str, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    FIRST_CALL_SECONDS[:] = times[:1]
    return statistics.median(times[1:])


def build_step(case_key: str, n_classes: int, path: str, device: str):
    """One training step of ``path`` (reference / ours / ours_cached) for a case, as a closure, with its method."""
    case = CASES[case_key]
    reference = path == "reference"
    backbone = build_backbone(device, reference)
    classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
    method_cfg = dict(case.method)
    if case.method["name"] == "cocoop" and reference:
        method_cfg.update(images_per_chunk=1, activation_checkpointing=False)  # the official per-image loop
    method = create_method(method_cfg, backbone, classes).to(device)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(case.batch, 3, 224, 224, generator=generator).to(device)  # (B, 3, H, W)
    labels = (torch.arange(case.batch) % n_classes).to(device)  # (B,)
    with torch.no_grad(), autocast(device, reference):
        features = method.encode_images(images).float()  # (B, D) what a cached view holds

    def step() -> None:
        torch.compiler.cudagraph_mark_step_begin()  # --compile reduce-overhead: one iteration of CUDA graphs
        with autocast(device, reference):
            if path == "ours_cached":
                out = method.forward_features(features, classes)
            else:
                out = method(images, classes)
            loss = torch.stack(list(method.loss(out, labels).values())).sum()
        loss.backward()
        method.zero_grad(set_to_none=True)

    return step, method, classes


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operators a step dispatches (forward and backward) and how many of them are views."""

    def __init__(self) -> None:
        super().__init__()
        self.total = self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        self.views += bool(func.is_view) or func.overloadpacket in (torch.ops.aten.detach, torch.ops.aten.t,
                                                                    torch.ops.aten._unsafe_view)
        return func(*args, **(kwargs or {}))


def step_op_counts(case_key: str, n_classes: int, path: str, device: str, plan_for: str) -> Measurement:
    """ATen operators dispatched by one step after a warm-up one, with the text buckets planned as on
    ``plan_for`` (a GPU step that is bound by launches costs about this many dispatches, views excepted)."""
    towers.CALL_OVERHEAD_TOKENS[device] = towers.CALL_OVERHEAD_TOKENS[plan_for]  # a forked child: no leak
    step, method, _ = build_step(case_key, n_classes, path, device)
    counts = []
    for n_blocks in (None, 1) if path != "reference" else (None,):  # one block per tower: less 11 blocks' operators
        if n_blocks:
            for stack in (method.backbone.text.transformer, method.backbone.model.visual.transformer):
                stack.resblocks = torch.nn.ModuleList(stack.resblocks[:n_blocks])
        step()
        with _OpCounter() as counter:
            step()
        counts.append((counter.total, counter.total - counter.views))
    (ops, kernels), (one_ops, one_kernels) = counts[0], counts[-1]
    depth = 12  # ViT-B/16: both towers
    outside = (one_ops - (ops - one_ops) / (depth - 1), one_kernels - (kernels - one_kernels) / (depth - 1))
    return Measurement(extra={"ops": ops, "kernels": kernels, "outside": outside})


def loss_difference(reference: Measurement, ours: Measurement) -> str:
    """The largest |loss| difference between two paths' steps (``extra["losses"]``, the same steps on both), with
    the first step's loss and the step count, for a report's last column; "—" when a path has no losses."""
    if not (reference.extra.get("losses") and ours.extra.get("losses")):
        return "—"
    pairs = list(zip(reference.extra["losses"], ours.extra["losses"], strict=True))
    return f"{max(abs(a - b) for a, b in pairs):.2e} (loss {pairs[0][0]:.4g}, {len(pairs)} steps)"


def timed_measurement(step: Callable[[], None], device: str, repeats: int) -> Measurement:
    """``timed(step)`` with the CUDA allocator's peak on a GPU, or the measurement "out of memory"."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        seconds = timed(step, device, repeats)
    except torch.OutOfMemoryError:
        return Measurement(error="out of memory")
    return Measurement(seconds, torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None)


def train_step_seconds(case_key: str, n_classes: int, path: str, device: str, repeats: int) -> Measurement:
    step, method, classes = build_step(case_key, n_classes, path, device)
    measured = timed_measurement(step, device, repeats)
    if measured.error:
        return measured
    tokens = method.class_prompts.tokens(classes)
    measured.extra = {"text_length": int(tokens.eot.max()) + 1, "prefix": tokens.shared_prefix,
                      "mean_suffix": float((tokens.eot + 1 - tokens.shared_prefix).float().mean()),
                      "first_step": FIRST_CALL_SECONDS[0]}
    return measured


def max_logit_difference(case_key: str, n_classes: int, device: str) -> Measurement:
    """fp32, no autocast: the largest |logit| difference between the 77-token path and ours, same weights."""
    torch.manual_seed(0)
    backbone = FrozenCLIP("ViT-B-16", None).to(device)
    classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
    method = create_method(dict(CASES[case_key].method), backbone, classes).to(device)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3)).to(device)  # (2, 3, H, W)
    logits = {}
    with torch.no_grad():
        for fast in (False, True):
            backbone.truncate_text = backbone.share_text_prefix = backbone.lean_blocks = fast
            logits[fast] = method(images, classes).logits.float()  # (2, C)
    difference = float((logits[True] - logits[False]).abs().max())
    return Measurement(extra={"difference": difference, "scale": float(logits[False].abs().max())})


def eval_images_per_second(path: str, device: str, n_images: int = 200, batch: int = 100,
                           n_classes: int = 100) -> Measurement:
    """CoOp M=4 evaluation throughput on ``n_images`` random images in batches of ``batch``."""
    reference = path == "reference"
    backbone = build_backbone(device, reference)
    classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
    method = create_method({"name": "coop", "n_ctx": 4}, backbone, classes).to(device)
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(n_images, 3, 224, 224, generator=generator)  # (N, 3, H, W)
    cache = Path(tempfile.mkdtemp()) / "features.safetensors"
    image_seconds = 0.0

    @torch.inference_mode()
    def evaluate() -> None:
        nonlocal image_seconds
        image_seconds = 0.0  # of this call only (the last call is the timed one)
        torch.compiler.cudagraph_mark_step_begin()
        with autocast(device, reference):
            if path == "ours_reeval":  # features from the first pass's cache; text once
                features = load_file(cache)["features"].to(device)  # (N, D)
                text = method.encode_classes(classes)  # (C, D)
                method.logits(features, text).argmax(-1).cpu()
                return
            text = None if reference else method.encode_classes(classes)  # ours: once per evaluation
            kept = []
            for chunk in images.split(batch):
                sync(device)
                start = time.perf_counter()
                features = method.encode_images(chunk.to(device))  # (b, D)
                sync(device)
                image_seconds += time.perf_counter() - start
                kept.append(features.float().cpu())
                batch_text = method.encode_classes(classes) if reference else text  # reference: per batch
                method.logits(features, batch_text).argmax(-1).cpu()
            if path == "ours_first":
                save_file({"features": torch.cat(kept)}, str(cache))

    if path == "ours_reeval":
        first, path = path, "ours_first"
        evaluate()  # writes the cache the re-evaluation reads
        path = first
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(evaluate, device, 1)
    peak = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None
    return Measurement(seconds, peak, extra={"images_per_second": n_images / seconds,
                                             "image_encoder_share": image_seconds / seconds})


# -- CPU: one forked child per measurement, for its peak RSS --------------------------------------------------------
def _child(conn, fn, args) -> None:
    try:
        result = fn(*args)
    except Exception as exc:  # reported in the table rather than aborting the whole run
        result = Measurement(error=f"{type(exc).__name__}: {exc}"[:120])
    result.peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    conn.send(result)
    conn.close()


def measure(fn, args: tuple, device: str) -> Measurement:
    if device == "cuda":
        return fn(*args)
    parent, child = mp.get_context("fork").Pipe(duplex=False)
    process = mp.get_context("fork").Process(target=_child, args=(child, fn, args))
    process.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = Measurement(error=f"killed (exit code {process.exitcode}; out of memory?)")
    process.join()
    return result


# -- report -------------------------------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def machine_line(device: str) -> str:
    torch_line = f"torch {torch.__version__}, open_clip {open_clip.__version__}"
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, {torch_line}"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {torch.get_num_threads()} threads, {platform.machine()}, {torch_line}, CPU"


def write_report(out: str, lines: list[str]) -> None:
    """Print a Markdown report and write it to ``out`` atomically."""
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_bytes(Path(out), text.encode())


def count_ops(args: argparse.Namespace) -> None:
    """The operator-count table: on a GPU each non-view operator is a kernel launch plus its Python and
    dispatch cost, which is what bounds few-shot steps there (and what CUDA graphs remove)."""
    plan = args.plan_for or args.device
    lines = ["| method | B | C | reference: ops (non-view) | ours: ops (non-view) | ours, cached views: ops (non-view) | "
             "ours: outside the block loops | ours, cached views: outside |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    print(lines[0], flush=True)
    for key in args.methods:
        case = CASES[key]
        for n_classes in args.classes:
            cells, outside = [], []
            for path in ("reference", "ours", "ours_cached"):
                if path == "ours_cached" and not case.text_only:
                    cells.append("n/a")
                    outside.append("n/a")
                    continue
                r = measure(step_op_counts, (key, n_classes, path, args.device, plan), args.device)
                cells.append(f"{r.extra['ops']} ({r.extra['kernels']})" if r.extra else r.error)
                if path != "reference":
                    outside.append(f"{r.extra['outside'][0]:.0f} ({r.extra['outside'][1]:.0f})" if r.extra else "—")
            lines.append(f"| {case.label} | {case.batch} | {n_classes} | " + " | ".join(cells + outside) + " |")
            print(lines[-1], flush=True)
    header = [f"# ATen operators per training step ({machine_line(args.device)}; text buckets planned as on {plan})",
              "", f"Command: `uv run scripts/benchmark.py {' '.join(sys.argv[1:])}`. One step (forward, the method's "
              "losses, backward) after a warm-up step, counted with a dispatch mode. Non-view operators (all but view, "
              "transpose, detach, ...) are about the kernel launches the step makes on a GPU. Outside the block loops: "
              "the operators left when the towers keep one block each, less one block's share (what stays eager "
              "under `trainer.compile`, which compiles the block loops and open_clip's unprompted `encode_image`; "
              "that encoder's stem and pooling are counted here although they are compiled too).", ""]
    write_report(args.out, header + lines)


def tier_b_attention(n_classes: int, device: str, repeats: int) -> Measurement:
    """Tier B text pass of CoOp M=4 (forward + backward to the context) over C class prompts, with the
    blocks reading the additive causal mask against attending with ``is_causal``, alternated in one process."""
    backbone = build_backbone(device, reference=False)
    backbone.share_text_prefix = False  # Tier B: every prompt through every block
    classes = ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES[:n_classes]))
    method = create_method(dict(CASES["coop4"].method), backbone, classes).to(device)

    def step() -> None:
        with autocast(device, reference=False):
            features = method.encode_classes(classes)  # (C, D)
        features.float().sum().backward()
        method.zero_grad(set_to_none=True)

    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(2):  # alternate, so drift on a shared machine hits both alike
        for causal in (False, True):
            backbone.text.causal = causal
            seconds[causal].append(timed(step, device, repeats))
    with torch.no_grad(), autocast(device, reference=False):
        backbone.text.causal = False
        masked = method.encode_classes(classes)
        backbone.text.causal = True
        difference = float((method.encode_classes(classes) - masked).abs().max())
    length = int(method.prompt_embeddings(classes)[1].max()) + 1  # tokens up to the last EOT
    return Measurement(extra={"mask": min(seconds[False]), "is_causal": min(seconds[True]),
                              "difference": difference, "length": length})


def attention_table(args: argparse.Namespace) -> None:
    lines = ["| C | text tokens | mask read, s | is_causal, s | ratio | max abs feature difference |",
             "|---:|---:|---:|---:|---:|---:|"]
    print(lines[0], flush=True)
    for n_classes in args.classes:
        r = measure(tier_b_attention, (n_classes, args.device, args.repeats), args.device)
        if not r.extra:
            lines.append(f"| {n_classes} | — | {r.error} | | | |")
        else:
            x = r.extra
            lines.append(f"| {n_classes} | {x['length']} | {x['mask']:.3f} | {x['is_causal']:.3f} | "
                         f"{x['mask'] / x['is_causal']:.2f}x | {x['difference']:.1e} |")
        print(lines[-1], flush=True)
    header = [f"# Tier B attention: causal mask read against is_causal ({machine_line(args.device)})", "",
              f"Command: `uv run scripts/benchmark.py {' '.join(sys.argv[1:])}`. CoOp M=4's text pass over the first "
              "C ImageNet class names (ViT-B/16 text tower, random weights), forward and backward to the context, "
              "Tier B (every prompt through every block, cut after the last EOT). Median of the repeats after a "
              "warm-up, best of two alternating rounds.", ""]
    write_report(args.out, header + lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--methods", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--classes", nargs="+", type=int, default=None,
                        help="class counts (default 10 100 1000; with --tpt or --promptkd 100 1000; with --gopro 10 100)")
    parser.add_argument("--reference-max-classes", type=int, default=None,
                        help="skip the reference path above this many classes (CPU default 100: at 1000 the "
                             "official computation needs more memory than the machine has)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-train", action="store_true", help="evaluation rows only")
    parser.add_argument("--compile", default=None, choices=list(COMPILE_MODES),
                        help="run our paths' tower block loops under torch.compile with this mode (trainer.compile)")
    parser.add_argument("--count-ops", action="store_true",
                        help="instead of timing, count the ATen operators one step dispatches on each path")
    parser.add_argument("--plan-for", choices=["cpu", "cuda"], default=None,
                        help="with --count-ops: plan the text length buckets as on this device (default --device)")
    parser.add_argument("--attention", action="store_true",
                        help="instead: time the Tier B text pass with the causal mask read against is_causal")
    parser.add_argument("--tpt", action="store_true", help="instead: TPT per test image, the official computation "
                        "against ours (scripts/benchmark_tpt.py; the reference where its memory estimate fits)")
    parser.add_argument("--promptkd", action="store_true", help="instead: one PromptKD training step, the official "
                        "computation (teacher text re-encoded every batch) against ours (scripts/benchmark_promptkd.py)")
    parser.add_argument("--gopro", action="store_true", help="instead: one GOPro training step, the official "
                        "computation (per-image 77-token text calls for each of 3 views) against ours "
                        "(scripts/benchmark_gopro.py; default C 10 100, the reference up to --reference-max-classes, "
                        "10 on a CPU)")
    parser.add_argument("--rpo", action="store_true", help="instead: one RPO training step, the official "
                        "computation (77-token text with per-class masks, masked image) against ours "
                        "(scripts/benchmark_rpo.py; the reference up to --reference-max-classes, 100 on a CPU)")
    parser.add_argument("--rpo-model", default="ViT-B-16", help="with --rpo: the backbone")
    parser.add_argument("--rpo-prompts", type=int, default=24, help="with --rpo: K, the prompt pairs")
    parser.add_argument("--student-model", default="ViT-B-16",
                        help="with --promptkd: the student's architecture; with --gopro: the backbone")
    parser.add_argument("--teacher-model", default="ViT-L-14", help="with --promptkd: the teacher's architecture")
    parser.add_argument("--out", default="benchmarks/cpu.md")
    args = parser.parse_args()
    global COMPILE_MODE
    COMPILE_MODE = args.compile
    args.classes = args.classes or ([100, 1000] if args.tpt or args.promptkd or args.rpo else [10, 100] if args.gopro
                                    else [10, 100, 1000])
    if args.tpt:
        sys.modules.setdefault("benchmark", sys.modules[__name__])  # benchmark_tpt reads this module's helpers
        from benchmark_tpt import tpt_table

        tpt_table(args)
        return
    if args.gopro:
        sys.modules.setdefault("benchmark", sys.modules[__name__])  # benchmark_gopro reads this module's helpers
        from benchmark_gopro import gopro_table

        gopro_table(args)
        return
    if args.rpo:
        sys.modules.setdefault("benchmark", sys.modules[__name__])  # benchmark_rpo reads this module's helpers
        from benchmark_rpo import rpo_table

        rpo_table(args)
        return
    if args.promptkd:
        sys.modules.setdefault("benchmark", sys.modules[__name__])  # benchmark_promptkd reads this module's helpers
        from benchmark_promptkd import promptkd_table

        promptkd_table(args)
        return
    if args.attention:
        attention_table(args)
        return
    if args.count_ops:
        count_ops(args)
        return
    ref_max = args.reference_max_classes or (100 if args.device == "cpu" else 10**9)
    gpu = args.device == "cuda"
    rows = []
    header = ("| method | B | C | text tokens: 77 → B → C (prefix + mean suffix) | reference s/step | reference peak | "
              "ours s/step | ours peak | ratio | ours, cached views s/step | ratio |"
              + (" ours TFLOP/s (MFU, Tier-B count) |" if gpu else "")
              + (" ours first step (compiles) |" if args.compile else ""))
    rule = ("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else "")
            + ("---:|" if args.compile else ""))
    print(header, flush=True)
    for key in [] if args.skip_train else args.methods:
        case = CASES[key]
        for n_classes in args.classes:
            ref = (measure(train_step_seconds, (key, n_classes, "reference", args.device, args.repeats), args.device)
                   if n_classes <= ref_max else Measurement(error="not run"))
            ours = measure(train_step_seconds, (key, n_classes, "ours", args.device, args.repeats), args.device)
            cached = (measure(train_step_seconds, (key, n_classes, "ours_cached", args.device, args.repeats),
                              args.device) if case.text_only else Measurement(error="n/a"))
            info = ours.extra
            tokens = (f"77 → {info['text_length']} → {info['prefix']} + {info['mean_suffix']:.1f}"
                      if info else "—")
            ratio = (f"{ref.seconds / ours.seconds:.1f}x" if ref.seconds and ours.seconds else "—")
            cached_ratio = (f"{ref.seconds / cached.seconds:.1f}x" if ref.seconds and cached.seconds else "—")
            row = (f"| {case.label} | {case.batch} | {n_classes} | {tokens} | {fmt(ref.seconds) if ref.seconds else ref.error} | "
                   f"{fmt(ref.peak_gib, '.1f', ' GiB') if ref.seconds else '—'} | {fmt(ours.seconds) if ours.seconds else ours.error} | "
                   f"{fmt(ours.peak_gib, '.1f', ' GiB')} | {ratio} | "
                   f"{fmt(cached.seconds) if cached.seconds else cached.error} | {cached_ratio} |")
            if gpu and ours.seconds and info:
                tflops = tier_b_step_flops(case, n_classes, info["text_length"]) / ours.seconds / 1e12
                row += f" {tflops:.0f} ({100 * tflops / PEAK_BF16_TFLOPS:.1f}%) |"
            elif gpu:
                row += " — |"
            if args.compile:
                row += f" {fmt(info.get('first_step'), '.1f', ' s') if info else '—'} |"
            rows.append(row)
            print(row, flush=True)
    equality_rows = []
    for key in [] if args.skip_train else args.methods:
        check = measure(max_logit_difference, (key, 100, args.device), args.device)
        diff = check.extra.get("difference")
        equality_rows.append(f"| {CASES[key].label} | {fmt(diff, '.2e') if diff is not None else check.error} | "
                             f"{fmt(check.extra.get('scale'), '.1f')} |")
        print(equality_rows[-1], flush=True)
    eval_rows = []
    if not args.skip_eval:
        results = {p: measure(eval_images_per_second, (p, args.device), args.device)
                   for p in ("reference", "ours_first", "ours_reeval")}
        base = results["reference"].extra.get("images_per_second")
        names = {"reference": "reference (text re-encoded per batch of 100)",
                 "ours_first": "ours, first pass (text once; image features written to the cache)",
                 "ours_reeval": "ours, re-evaluation from the feature cache"}
        for p, r in results.items():
            ips = r.extra.get("images_per_second")
            share = r.extra.get("image_encoder_share")
            eval_rows.append(f"| {names[p]} | {fmt(ips, '.1f') if ips else r.error} | "
                             f"{fmt(100 * share, '.0f', '%') if share is not None and p != 'ours_reeval' else '—'} | "
                             f"{fmt(r.peak_gib, '.1f', ' GiB')} | {f'{ips / base:.1f}x' if ips and base else '—'} |")
            print(eval_rows[-1], flush=True)
    lines = [
        f"# Benchmark: official-style computation against ours ({machine_line(args.device)})", "",
        f"Command: `uv run scripts/benchmark.py {' '.join(sys.argv[1:])}`. ViT-B/16 with random weights "
        f"(`pretrained=None`), the first C of open_clip's ImageNet class names, median of {args.repeats} steps after one "
        "warm-up. A step is forward, the method's losses and backward (the optimizer update is the same in both). "
        + ("Reference: fp16 weights + fp16 autocast (the official PREC=fp16), 77-token text, the image encoder every step, "
           "CoCoOp's per-image loop. Ours: bf16 weights cast once + bf16 autocast, fp32 prompts, Tier C text. "
           "Peak = CUDA allocator peak." if gpu else
           "Both paths fp32. Reference: 77-token text, the image encoder every step, CoCoOp's per-image loop. Ours: "
           "Tier C text. Peak = peak RSS of a forked process that builds the model and runs the measurement.")
        + (f" Ours runs the towers' block loops under torch.compile (mode {args.compile}), compiled during the "
           "untimed warm-up step." if args.compile else ""),
        "", "## Training step", "", header, rule, *rows, ""]
    lines += ["## Equality (fp32, C=100, 2 images): ours against the 77-token path", "",
              "| method | max abs logit difference | max abs logit |", "|---|---:|---:|", *equality_rows, ""]
    if eval_rows:
        lines += ["## Evaluation (CoOp M=4, C=100, 200 images in batches of 100)", "",
                  "| path | images/s | time in the image encoder | peak | ratio |", "|---|---:|---:|---:|---:|",
                  *eval_rows, ""]
    text = "\n".join(lines)
    print(text)
    atomic_write_bytes(Path(args.out), text.encode())


if __name__ == "__main__":
    main()
