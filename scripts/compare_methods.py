"""Base-to-new comparison of every method on the embedded synthetic default, side by side.

Each method runs with the demo's budget (packaged tiny CLIP, 16 shots, 10 epochs, batch 32) and the
learning rate of its paper preset (configs/experiment/<method>/base2new.yaml); seeds are averaged and
HM is the harmonic mean of the averaged base and new accuracies. Writes a markdown table.

    uv run scripts/compare_methods.py                          # every method, seeds 1 2 3
    uv run scripts/compare_methods.py --methods coop maple --seeds 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from omegaconf import OmegaConf

from prompt_learning.config import CONFIG_DIR, compose_config, exit_on_user_error
from prompt_learning.engine.run import train_and_test
from prompt_learning.files import atomic_write_bytes
from prompt_learning.methods import list_methods
from prompt_learning.protocols import harmonic_mean

EPOCHS = 10
# Settings that follow from the shorter budget rather than from the paper presets.
BUDGET_OVERRIDES = {
    "promptsrc": [f"method.gpa_mean={0.75 * EPOCHS}"],  # the preset's mu=15 of 20 epochs, scaled to this run
}


def preset_lr(method: str) -> float | None:
    preset = CONFIG_DIR / "experiment" / method / "base2new.yaml"
    return OmegaConf.load(preset).get("optim", {}).get("lr") if preset.is_file() else None


def run(method: str, seed: int, output_dir: str) -> dict:
    overrides = ["experiment=demo", f"method={method}", f"seed={seed}", f"trainer.max_epochs={EPOCHS}",
                 "data.batch_size=32", "trainer.enable_progress_bar=false", "logger=none",
                 f"paths.output_dir={output_dir}", *BUDGET_OVERRIDES.get(method, [])]
    if method == "coop":
        overrides.append("method.ctx_init='a photo of a'")
    lr = preset_lr(method)
    if lr is not None:
        overrides.append(f"optim.lr={lr}")
    return train_and_test(compose_config(overrides))


def mean_row(records: list[dict], key: str | None = None) -> tuple[float, float, float]:
    pick = (lambda r: r[key]) if key else (lambda r: r)
    base = statistics.mean(pick(r)["metrics"]["base"]["acc"] for r in records)
    new = statistics.mean(pick(r)["metrics"]["new"]["acc"] for r in records)
    return base, new, harmonic_mean(base, new)


def main() -> None:
    runnable = [n for n, c in list_methods().items() if c.trainable and c.supports_unseen_classes]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=runnable, choices=runnable)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--output-dir", default="outputs/compare")
    parser.add_argument("--table", default="docs/synthetic_base2new.md")
    args = parser.parse_args()
    rows, zero_shot, seconds = {}, [], {}
    for method in args.methods:
        start = time.time()
        records = [run(method, seed, args.output_dir) for seed in args.seeds]
        seconds[method] = (time.time() - start) / len(args.seeds)
        rows[method] = mean_row(records)
        zero_shot = zero_shot or [r for r in records if r.get("zero_shot")]
        print(f"{method:14s} base {rows[method][0]:6.2f}  new {rows[method][1]:6.2f}  HM {rows[method][2]:6.2f}"
              f"  ({seconds[method]:.0f} s per seed)", flush=True)
    zs = mean_row(zero_shot, "zero_shot")
    lines = ["| method | base | new | HM | Δbase | Δnew | ΔHM | s/seed |", "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| zero-shot CLIP | {zs[0]:.2f} | {zs[1]:.2f} | {zs[2]:.2f} | | | | |"]
    for method, (base, new, hm) in rows.items():
        lines.append(f"| {method} | {base:.2f} | {new:.2f} | {hm:.2f} | {base - zs[0]:+.2f} | {new - zs[1]:+.2f} | "
                     f"{hm - zs[2]:+.2f} | {seconds[method]:.0f} |")
    header = (f"Base-to-new on the embedded synthetic default (32 base / 32 new classes, packaged tiny CLIP), "
              f"16 shots, {EPOCHS} epochs, batch 32, each method's preset learning rate; mean of seeds "
              f"{' '.join(map(str, args.seeds))}. Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
              f"CPU only.\n\nCommand: `uv run scripts/compare_methods.py"
              f"{'' if args.methods == runnable else ' --methods ' + ' '.join(args.methods)}"
              f"{'' if args.seeds == [1, 2, 3] else ' --seeds ' + ' '.join(map(str, args.seeds))}`\n\n")
    table = header + "\n".join(lines) + "\n"
    print(table)
    atomic_write_bytes(Path(args.table), table.encode())


if __name__ == "__main__":
    with exit_on_user_error():
        main()
