"""Results aggregation (docs/protocols.md, aggregation) against an independent plain-Python computation."""

from __future__ import annotations

import ast
import csv
import importlib
import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

from prompt_learning.errors import ConfigurationError, DataError
from prompt_learning.results import AggregationWarning, aggregate, load_results, print_summary, write_outputs

ROOT = Path(__file__).parents[1]
_spec = importlib.util.spec_from_file_location("scripts_aggregate", ROOT / "scripts" / "aggregate.py")
aggregate_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(aggregate_cli)

PNG = b"\x89PNG\r\n\x1a\n"
BACKBONE = "ViT-B-16"
SEEDS = (1, 2, 3)
B2N_DATASETS = ("caltech101", "dtd", "eurosat")
B2N_METHODS = ("coop", "maple")
MISSING = ("maple", "eurosat", 3)  # this base2new run is absent: the group has seeds 1, 2 only
FS_DATASETS = ("dtd", "eurosat")
FS_METHODS = ("coop", "promptsrc")
FS_SHOTS = (1, 2, 4)
TARGETS = ("caltech101", "dtd")


# ---------------------------------------------------------------------- independent reference computation

def ref_mean(xs: list[float]) -> float:
    total = 0.0
    for x in xs:
        total += x
    return total / len(xs)


def ref_pstd(xs: list[float]) -> float:
    m = ref_mean(xs)
    return (sum((x - m) * (x - m) for x in xs) / len(xs)) ** 0.5


def ref_hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n)


def acc(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high), 2)


def build_runs() -> list[dict]:
    """Plain dicts shaped like results.json (engine/run.py results_record)."""
    rng = random.Random(1234)
    runs = []

    def run(protocol, dataset, method, shots, seed, metrics, **extra):
        record = {"schema_version": 1, "method": method, "backbone": {"name": BACKBONE, "embed_dim": 512},
                  "dataset": dataset, "protocol": protocol, "shots": shots, "seed": seed,
                  "metrics": {k: {"acc": v} for k, v in metrics.items()}, **extra}
        if protocol == "base2new":
            record["hm"] = ref_hm(metrics["base"], metrics["new"])
        runs.append(record)

    for method in B2N_METHODS:
        for i, dataset in enumerate(B2N_DATASETS):
            for seed in SEEDS:
                if (method, dataset, seed) == MISSING:
                    continue
                # very unequal base/new on some datasets, so HM-of-averages != mean-of-HMs
                run("base2new", dataset, method, 16, seed,
                    {"base": acc(rng, 90, 98), "new": acc(rng, 20 + 30 * i, 30 + 30 * i)})
    for method in FS_METHODS:
        for dataset in FS_DATASETS:
            for shots in FS_SHOTS:
                for seed in SEEDS:
                    run("few_shot", dataset, method, shots, seed, {"all": acc(rng, 40 + 8 * shots, 50 + 8 * shots)})
    for method in ("cocoop", "coop"):
        for seed in SEEDS:
            metrics = {"imagenet": acc(rng, 70, 72), **{t: acc(rng, 40, 90) for t in TARGETS}}
            run("cross_dataset", "imagenet", method, 16, seed, metrics, source="imagenet", targets=list(TARGETS))
    return runs


RUNS = build_runs()


def runs_of(protocol: str, dataset: str, method: str, shots: int = 16) -> list[dict]:
    return [r for r in RUNS if (r["protocol"], r["dataset"], r["method"], r["shots"]) == (protocol, dataset, method, shots)]


def accs(runs: list[dict], metric: str) -> list[float]:
    return [r["metrics"][metric]["acc"] for r in runs]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outputs")
    for r in RUNS:
        run_dir = root / r["protocol"] / r["dataset"] / r["method"] / BACKBONE / f"shots_{r['shots']}" / f"seed_{r['seed']}"
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps(r))
        (run_dir / "log.txt").write_text("* accuracy: 12.3%\n")  # logs are never read
    broken = root / "broken" / "seed_1"
    broken.mkdir(parents=True)
    (broken / "results.json").write_text("{not json")
    (root / "incomplete").mkdir()
    (root / "incomplete" / "results.json").write_text(json.dumps({"method": "coop", "seed": 1}))
    return root


@pytest.fixture(scope="module")
def agg(results_dir: Path):
    with pytest.warns(AggregationWarning):
        return aggregate(load_results(results_dir))


# -------------------------------------------------------------------------------------------------- tests

def test_load_skips_unusable_files_with_a_warning(results_dir: Path) -> None:
    with pytest.warns(AggregationWarning) as caught:
        records = load_results(results_dir)
    messages = [str(w.message) for w in caught]
    assert any("broken" in m and "unreadable" in m for m in messages)
    assert any("incomplete" in m and "missing field" in m for m in messages)
    assert len(records) == len(RUNS)
    assert all(Path(r["_path"]).name == "results.json" for r in records)


def test_load_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a directory"):
        load_results(tmp_path / "nope")
    with pytest.raises(DataError, match="No usable results.json"):
        load_results(tmp_path)


def test_base2new_per_dataset_mean_std_and_hm_of_seed_means(agg) -> None:
    for method in B2N_METHODS:
        for dataset in B2N_DATASETS:
            runs = runs_of("base2new", dataset, method)
            g = agg.group("base2new", dataset, method, BACKBONE, 16)
            b, n = ref_mean(accs(runs, "base")), ref_mean(accs(runs, "new"))
            assert g.metrics["base"].mean == pytest.approx(b)
            assert g.metrics["base"].std == pytest.approx(ref_pstd(accs(runs, "base")))
            assert g.metrics["new"].std == pytest.approx(ref_pstd(accs(runs, "new")))
            assert g.metrics["new"].n == len(runs)
            assert g.hm == pytest.approx(ref_hm(b, n))
            # not the mean of the per-seed HMs stored in results.json
            assert g.hm != pytest.approx(ref_mean([r["hm"] for r in runs]), abs=1e-6)


def test_base2new_average_is_hm_of_averages_not_mean_of_hms(agg) -> None:
    for method in B2N_METHODS:
        groups = [agg.group("base2new", d, method, BACKBONE, 16) for d in B2N_DATASETS]
        b_bar = ref_mean([ref_mean(accs(runs_of("base2new", d, method), "base")) for d in B2N_DATASETS])
        n_bar = ref_mean([ref_mean(accs(runs_of("base2new", d, method), "new")) for d in B2N_DATASETS])
        mean_of_hms = ref_mean([g.hm for g in groups])
        avg = next(a for a in agg.base2new_averages if a.method == method)
        assert (avg.base, avg.new) == (pytest.approx(b_bar), pytest.approx(n_bar))
        assert avg.hm == pytest.approx(ref_hm(b_bar, n_bar))
        assert abs(avg.hm - mean_of_hms) > 1.0  # the two definitions really differ on this data
        assert avg.datasets == B2N_DATASETS


def test_missing_seed_is_warned_and_marked(agg, results_dir: Path) -> None:
    method, dataset, seed = MISSING
    g = agg.group("base2new", dataset, method, BACKBONE, 16)
    assert g.seeds == (1, 2) and g.metrics["base"].n == 2
    assert g.metrics["base"].mean == pytest.approx(ref_mean(accs(runs_of("base2new", dataset, method), "base")))
    assert g.key in agg.flagged
    assert [w for w in agg.warnings if dataset in w and method in w and "n=2" in w and "[1, 2, 3]" in w]
    with pytest.warns(AggregationWarning, match=r"maple .* on eurosat: seeds \[1, 2\] \(n=2\), fewer seeds"):
        aggregate(RUNS)
    complete = [g.key for g in agg.groups if g.key != ("base2new", dataset, method, BACKBONE, 16)]
    assert not agg.flagged & set(complete)


def test_few_shot_per_dataset_and_average(agg) -> None:
    for method in FS_METHODS:
        for shots in FS_SHOTS:
            means = []
            for dataset in FS_DATASETS:
                values = accs(runs_of("few_shot", dataset, method, shots), "all")
                g = agg.group("few_shot", dataset, method, BACKBONE, shots)
                assert (g.metrics["all"].mean, g.metrics["all"].std, g.metrics["all"].n) == (
                    pytest.approx(ref_mean(values)), pytest.approx(ref_pstd(values)), 3)
                means.append(ref_mean(values))
            avg = next(a for a in agg.few_shot_averages if (a.method, a.shots) == (method, shots))
            assert avg.mean == pytest.approx(ref_mean(means))
            assert avg.datasets == FS_DATASETS


def test_cross_dataset_targets_source_and_average(agg) -> None:
    assert {t.method for t in agg.transfer} == {"coop", "cocoop"}
    for t in agg.transfer:
        runs = runs_of("cross_dataset", "imagenet", t.method)
        assert t.source == "imagenet" and tuple(t.targets) == TARGETS
        assert t.source_acc.mean == pytest.approx(ref_mean(accs(runs, "imagenet")))
        for target in TARGETS:
            assert t.targets[target].mean == pytest.approx(ref_mean(accs(runs, target)))
            assert t.targets[target].std == pytest.approx(ref_pstd(accs(runs, target)))
        assert t.average == pytest.approx(ref_mean([ref_mean(accs(runs, x)) for x in TARGETS]))


def test_duplicate_seed_keeps_latest_with_warning() -> None:
    old = {**RUNS[0], "started_at": "2024-01-01T00:00:00", "metrics": {"base": {"acc": 1.0}, "new": {"acc": 1.0}}}
    new = {**RUNS[0], "started_at": "2025-01-01T00:00:00"}
    with pytest.warns(AggregationWarning, match="2 results for base2new"):
        agg = aggregate([old, new])
    assert agg.groups[0].metrics["base"].mean == pytest.approx(RUNS[0]["metrics"]["base"]["acc"])


def test_csv_rows(agg, tmp_path: Path) -> None:
    write_outputs(agg, tmp_path, plots=False)
    with open(tmp_path / "aggregate.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["protocol", "dataset", "method", "backbone", "shots", "metric", "mean", "std", "n", "seeds",
                             "ece_mean", "ece_std", "nll_mean", "nll_std"]
    # results.json without calibration metrics (written before them) aggregate with blank calibration cells
    assert {r[k] for r in rows for k in ("ece_mean", "ece_std", "nll_mean", "nll_std")} == {""}
    by_key = {(r["protocol"], r["dataset"], r["method"], r["shots"], r["metric"]): r for r in rows}
    n_groups = len(B2N_DATASETS) * len(B2N_METHODS) + len(FS_DATASETS) * len(FS_METHODS) * len(FS_SHOTS) + 2
    assert len(agg.groups) == n_groups
    assert len(rows) == len(B2N_DATASETS) * len(B2N_METHODS) * 3 + len(FS_DATASETS) * len(FS_METHODS) * len(FS_SHOTS) + 2 * 3
    runs = runs_of("base2new", "dtd", "coop")
    row = by_key[("base2new", "dtd", "coop", "16", "new")]
    assert float(row["mean"]) == pytest.approx(ref_mean(accs(runs, "new")), abs=1e-5)
    assert float(row["std"]) == pytest.approx(ref_pstd(accs(runs, "new")), abs=1e-5)
    assert (row["backbone"], row["n"], row["seeds"]) == (BACKBONE, "3", "1;2;3")
    hm = by_key[("base2new", "dtd", "coop", "16", "hm")]
    assert float(hm["mean"]) == pytest.approx(ref_hm(ref_mean(accs(runs, "base")), ref_mean(accs(runs, "new"))), abs=1e-5)
    assert hm["std"] == ""
    missing = by_key[("base2new", "eurosat", "maple", "16", "base")]
    assert (missing["n"], missing["seeds"]) == ("2", "1;2")
    fs = by_key[("few_shot", "eurosat", "promptsrc", "4", "all")]
    assert float(fs["mean"]) == pytest.approx(ref_mean(accs(runs_of("few_shot", "eurosat", "promptsrc", 4), "all")), abs=1e-5)
    target = by_key[("cross_dataset", "imagenet", "cocoop", "16", "dtd")]
    assert float(target["mean"]) == pytest.approx(ref_mean(accs(runs_of("cross_dataset", "imagenet", "cocoop"), "dtd")),
                                                  abs=1e-5)


def test_markdown_tables(agg, tmp_path: Path) -> None:
    write_outputs(agg, tmp_path, plots=False)
    md = (tmp_path / "aggregate.md").read_text()
    assert "## Warnings" in md and "on eurosat: seeds [1, 2] (n=2)" in md
    assert "| method | seeds | caltech101 B | caltech101 N | caltech101 H | dtd B |" in md
    avg = next(a for a in agg.base2new_averages if a.method == "coop")
    assert f"| {avg.base:.2f} | {avg.new:.2f} | {avg.hm:.2f} | 3 of 3 datasets |" in md
    assert "†" in md  # the maple/eurosat cells
    assert "## Few-shot learning" in md and "## Cross-dataset transfer" in md
    assert "imagenet (source)" in md and "2 of 2 targets" in md
    assert "## Calibration" not in md  # no run recorded ECE / NLL


def test_plots_are_pngs(agg, tmp_path: Path) -> None:
    written = write_outputs(agg, tmp_path)
    names = {p.name for p in written}
    expected = {f"base2new_{BACKBONE}_shots16.png", "few_shot_dtd.png", "few_shot_eurosat.png", "few_shot_average.png"}
    assert expected <= names
    for name in expected:
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_missing_matplotlib_names_the_extra(agg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigurationError, match=r"uv sync --extra plots"):
        write_outputs(agg, tmp_path)


def test_matplotlib_is_imported_lazily() -> None:
    module = importlib.import_module("prompt_learning.results.aggregate")  # the package's `aggregate` is the function
    tree = ast.parse(Path(module.__file__).read_text())
    top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in top if m.split(".")[0] in ("matplotlib", "lightning", "hydra", "omegaconf")}


def test_summary(agg, capsys: pytest.CaptureFixture) -> None:
    print_summary(agg)
    out = capsys.readouterr().out
    avg = next(a for a in agg.base2new_averages if a.method == "maple")
    assert f"H {avg.hm:.2f}  (average of 3 datasets)" in out
    assert "cross_dataset" in out and "warning(s)" in out


def test_cli_in_process(results_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    aggregate_cli.main([f"results_dir={results_dir}"])
    captured = capsys.readouterr()
    assert "base2new  coop" in captured.out and "wrote " in captured.out
    assert "warning: Skipped" in captured.err and "n=2" in captured.err
    default_out = results_dir / "aggregate"
    assert (default_out / "aggregate.md").is_file()
    assert (default_out / "few_shot_average.png").read_bytes().startswith(PNG)

    aggregate_cli.main(["--results-dir", str(results_dir), "--out", str(tmp_path / "report"), "--no-plots"])
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["aggregate.csv", "aggregate.md"]
    capsys.readouterr()

    with pytest.raises(SystemExit) as exc:
        aggregate_cli.main([f"results_dir={tmp_path / 'missing'}"])
    assert exc.value.code == 2 and "error: results_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        aggregate_cli.main(["seed=1"])
    assert exc.value.code == 2


def test_sweep_points_and_own_folders_are_rows_of_their_own() -> None:
    """A sweep over method.n_ctx (or optim.lr) gives one row per point, and two image folders two datasets;
    settings that differ only between datasets (per-dataset presets) keep one method row."""
    def run(root: str, n_ctx: int, seed: int, accuracy: float, epochs: int = 10) -> dict:
        return {"method": "coop", "backbone": {"name": BACKBONE}, "dataset": "folder", "protocol": "few_shot",
                "shots": 4, "seed": seed, "metrics": {"all": {"acc": accuracy}}, "method_config": {"n_ctx": n_ctx},
                "config": {"dataset": {"run_name": f"folder-{root}"}, "optim": {"lr": 0.002},
                           "trainer": {"max_epochs": epochs}}}

    runs = [run("pets-0a1b2c", n, seed, 10 * n + seed) for n in (4, 16) for seed in (1, 2)]
    runs += [run("cars-3d4e5f", n, seed, 50 + seed, epochs=20) for n in (4, 16) for seed in (1, 2)]
    import warnings as w
    with w.catch_warnings():
        w.simplefilter("error", AggregationWarning)  # no duplicates, no mismatched seeds
        result = aggregate(runs)
    rows = {(g.dataset, g.method): g.metrics["all"] for g in result.groups}
    assert set(rows) == {("folder-pets-0a1b2c", "coop (n_ctx=4)"), ("folder-pets-0a1b2c", "coop (n_ctx=16)"),
                         ("folder-cars-3d4e5f", "coop (n_ctx=4)"), ("folder-cars-3d4e5f", "coop (n_ctx=16)")}
    assert rows[("folder-pets-0a1b2c", "coop (n_ctx=16)")].mean == pytest.approx(ref_mean([161, 162]))
    assert rows[("folder-cars-3d4e5f", "coop (n_ctx=4)")].n == 2
