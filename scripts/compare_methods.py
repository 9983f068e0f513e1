"""Base-to-new comparison of every method on the embedded synthetic default, side by side.

Each method runs on the demo's task (packaged tiny CLIP, 16 shots per base class) with the learning
rate, batch size and epochs of its paper preset (configs/experiment/<method>/base2new.yaml), epochs
capped at 10 for CPU time; seeds are averaged and HM is the harmonic mean of the averaged base and
new accuracies. Writes a markdown table.

    uv run scripts/compare_methods.py                          # every method, seeds 1 2 3
    uv run scripts/compare_methods.py --methods coop maple --seeds 1
    uv run scripts/compare_methods.py --reuse                  # keep results.json files an earlier call wrote

``tpt_from_coop`` is TPT starting from the same seed's CoOp export (TPT + CoOp); methods that train nothing
(Tip-Adapter, TPT) record no zero-shot reference of their own: the table's comes from the trained methods.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from prompt_learning.cli.common import install_warning_format
from prompt_learning.config import CONFIG_DIR, compose_config, exit_on_user_error
from prompt_learning.engine.run import train_and_test
from prompt_learning.files import atomic_write_bytes
from prompt_learning.methods import list_methods
from prompt_learning.protocols import harmonic_mean
from prompt_learning.protocols.base2new import Base2New

MAX_EPOCHS = 10


def preset_overrides(method: str) -> list[str]:
    """The paper preset's method keys, learning rate, batch size and (capped) epochs as overrides (those it sets:
    a method that trains nothing, or owns its optimizer, has no epochs or learning rate)."""
    preset = OmegaConf.load(CONFIG_DIR / "experiment" / method / f"{Base2New.name}.yaml")
    out = [f"method.{k}={v!r}" if isinstance(v, str) else f"method.{k}={v}" for k, v in preset.get("method", {}).items()]
    epochs = min(int(OmegaConf.select(preset, "trainer.max_epochs", default=MAX_EPOCHS)), MAX_EPOCHS)
    out.append(f"trainer.max_epochs={epochs}")
    for key in ("optim.lr", "data.batch_size"):
        if OmegaConf.select(preset, key) is not None:
            out.append(f"{key}={OmegaConf.select(preset, key)}")
    composed = compose_config([f"method={method}", *[o for o in out if o.startswith("method.")]]).method
    if "gpa_mean" in composed:  # Gaussian prompt aggregation: keep its peak at the same fraction of the run
        out.append(f"method.gpa_mean={composed.gpa_mean / int(preset.trainer.max_epochs) * epochs}")
    return out


TPT_FROM_COOP = "tpt_from_coop"  # TPT starting from the same seed's CoOp run (its export), as TPT + CoOp


def run(method: str, seed: int, output_dir: str, reuse: bool = False) -> dict:
    """The demo's task (tiny_synthetic, synthetic, base2new, 16 shots) with the method's preset settings."""
    extra = []
    if method == TPT_FROM_COOP:
        coop = run("coop", seed, output_dir, reuse=True)
        method, extra = "tpt", [f"method.init_from={Path(coop['config']['paths']['run_dir']) / 'export'}"]
    overrides = ["backbone=tiny_synthetic", "dataset=synthetic", f"protocol={Base2New.name}", "shots=16",
                 f"method={method}", f"seed={seed}", "trainer.enable_progress_bar=false", "logger=none",
                 f"paths.output_dir={output_dir}", *preset_overrides(method), *extra]
    cfg = compose_config(overrides)
    done = Path(cfg.paths.run_dir) / "results.json"
    if reuse and done.is_file():
        return json.loads(done.read_text())
    return train_and_test(cfg)


def mean_row(records: list[dict], key: str | None = None) -> tuple[float, float, float]:
    pick = (lambda r: r[key]) if key else (lambda r: r)
    base = statistics.mean(pick(r)["metrics"]["base"]["acc"] for r in records)
    new = statistics.mean(pick(r)["metrics"]["new"]["acc"] for r in records)
    return base, new, harmonic_mean(base, new)


def mean_ece(records: list[dict], key: str | None = None) -> str:
    """Mean expected calibration error (%) of base / new over the seeds, or "" where a record lacks it."""
    pick = (lambda r: r[key]) if key else (lambda r: r)
    cells = []
    for split in ("base", "new"):
        values = [pick(r)["metrics"][split].get("ece") for r in records]
        if any(v is None for v in values):
            return ""
        cells.append(f"{statistics.mean(values):.2f}")
    return " / ".join(cells)


def main() -> None:
    runnable = [n for n, c in list_methods().items() if n != "zeroshot" and c.supports_unseen_classes]
    runnable.append(TPT_FROM_COOP)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=runnable, choices=runnable)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--output-dir", default="outputs/compare")
    parser.add_argument("--table", default="outputs/compare/table.md")  # docs/synthetic_base2new.md adds a reading
    parser.add_argument("--reuse", action="store_true", help="reuse results.json files already in --output-dir")
    args = parser.parse_args()
    rows, zero_shot, seconds, ece = {}, [], {}, {}
    for method in args.methods:
        records = []
        for seed in args.seeds:
            records.append(run(method, seed, args.output_dir, args.reuse))
            m = records[-1]["metrics"]
            print(f"  {method} seed {seed}: base {m['base']['acc']:.2f} new {m['new']['acc']:.2f}", flush=True)
        seconds[method] = statistics.mean(r["wall_time_s"] for r in records)  # as measured by each run
        rows[method] = mean_row(records)
        ece[method] = mean_ece(records)
        zero_shot = zero_shot or [r for r in records if r.get("zero_shot")]
        print(f"{method:14s} base {rows[method][0]:6.2f}  new {rows[method][1]:6.2f}  HM {rows[method][2]:6.2f}"
              f"  ({seconds[method]:.0f} s per seed)", flush=True)
    zs = mean_row(zero_shot, "zero_shot")
    lines = ["| method | base | new | HM | Δbase | Δnew | ΔHM | ECE base / new (%) | s/seed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| zero-shot CLIP | {zs[0]:.2f} | {zs[1]:.2f} | {zs[2]:.2f} | | | | {mean_ece(zero_shot, 'zero_shot')} | |"]
    for method, (base, new, hm) in rows.items():
        lines.append(f"| {method} | {base:.2f} | {new:.2f} | {hm:.2f} | {base - zs[0]:+.2f} | {new - zs[1]:+.2f} | "
                     f"{hm - zs[2]:+.2f} | {ece[method]} | {seconds[method]:.0f} |")
    header = (f"Base-to-new on the embedded synthetic default (32 base / 32 new classes, packaged tiny CLIP), "
              f"16 shots, each method's paper-preset learning rate, batch size and epochs (capped at {MAX_EPOCHS}, "
              f"PromptSRC's GPA mean at 0.75 of the epochs); mean of seeds "
              f"{' '.join(map(str, args.seeds))}. Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
              f"CPU only.\n\nCommand: `uv run scripts/compare_methods.py"
              f"{'' if args.methods == runnable else ' --methods ' + ' '.join(args.methods)}"
              f"{'' if args.seeds == [1, 2, 3] else ' --seeds ' + ' '.join(map(str, args.seeds))}`\n\n")
    table = header + "\n".join(lines) + "\n"
    print(table)
    atomic_write_bytes(Path(args.table), table.encode())


if __name__ == "__main__":
    install_warning_format()
    with exit_on_user_error():
        main()
