"""The aggregate's figures (docs/protocols.md, "Plots"), inspected as matplotlib objects.

Synthetic results.json records (shaped like engine/bookkeeping.py ``results_record``, with a ``zero_shot``
entry per trained run and a few ``method=zeroshot`` runs) are aggregated and the protocols' figures examined:
the zero-shot reference, the error bars, the axes and the labels. Expected values are computed here in plain
Python. Error bars are ± the population std over seeds (ddof=0, ``np.std``), as the tables.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from prompt_learning.protocols import get_protocol  # noqa: E402
from prompt_learning.results import AggregationWarning, aggregate  # noqa: E402

BACKBONE = "ViT-B-16"
SEEDS = (1, 2, 3)
SHOTS = (1, 2, 4, 8, 16)
FS_DATASETS = ("dtd", "eurosat")
FS_METHODS = ("coop", "kgcoop")
B2N_DATASETS = ("caltech101", "dtd", "eurosat")
B2N_METHODS = ("coop", "maple")
ZS_FEW_SHOT = {"dtd": 44.0, "eurosat": 48.0}  # zero-shot CLIP per dataset, before a per-record jitter
ONE_SEED = ("kgcoop", "dtd", 2)  # this few-shot group has seed 1 only: no error bar there


def record(protocol: str, dataset: str, method: str, shots: int, seed: int, metrics: dict[str, float],
           zero_shot: dict[str, float] | None) -> dict:
    return {"schema_version": 1, "method": method, "backbone": {"name": BACKBONE, "embed_dim": 512},
            "dataset": dataset, "protocol": protocol, "shots": shots, "seed": seed,
            "metrics": {k: {"acc": v} for k, v in metrics.items()},
            "zero_shot": None if zero_shot is None else {"metrics": {k: {"acc": v} for k, v in zero_shot.items()}}}


def few_shot_acc(dataset: str, method: str, shots: int, seed: int) -> float:
    """eurosat climbs to 99.x so that mean + std passes 100; coop and kgcoop coincide at 4 shots."""
    top = 99.2 if dataset == "eurosat" else 70.0
    gain = 0.0 if (method == "coop" or shots == 4) else 1.5
    return round(top - 30.0 / shots + gain + (seed - 2) * (0.4 + 0.1 * shots), 3)


def few_shot_records() -> list[dict]:
    runs = []
    for dataset in FS_DATASETS:
        for method in FS_METHODS:
            for shots in SHOTS:
                for seed in SEEDS:
                    if (method, dataset, shots) == ONE_SEED and seed != 1:
                        continue
                    zs = ZS_FEW_SHOT[dataset] + 0.2 * seed + 0.01 * shots + (0.3 if method == "kgcoop" else 0.0)
                    runs.append(record("few_shot", dataset, method, shots, seed,
                                       {"all": few_shot_acc(dataset, method, shots, seed)}, {"all": zs}))
        for seed in SEEDS:  # method=zeroshot, run once at the default 16 shots: no zero_shot entry of its own
            runs.append(record("few_shot", dataset, "zeroshot", 16, seed, {"all": ZS_FEW_SHOT[dataset] + 0.5 * seed},
                               None))
    return runs


def base2new_records() -> list[dict]:
    runs = []
    for i, dataset in enumerate(B2N_DATASETS):
        for j, method in enumerate(B2N_METHODS):
            for seed in SEEDS:
                metrics = {"base": 80.0 + 5 * i + j + 0.7 * seed, "new": 60.0 + 4 * i - j + 1.1 * seed ** 2}
                zero_shot = {"base": 70.0 + 4 * i + 0.1 * seed + 0.2 * j, "new": 72.0 + 3 * i - 0.2 * seed}
                runs.append(record("base2new", dataset, method, 16, seed, metrics, zero_shot))
        for seed in SEEDS:
            runs.append(record("base2new", dataset, "zeroshot", 16, seed,
                               {"base": 70.5 + 4 * i, "new": 71.0 + 3 * i + 0.3 * seed}, None))
    return runs


def quiet_aggregate(records: list[dict]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AggregationWarning)  # ONE_SEED is warned about, by design
        return aggregate(records)


# ---------------------------------------------------------------------- independent reference computation

def ref_mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def ref_pstd(xs: list[float]) -> float:
    m = ref_mean(xs)
    return (sum((x - m) ** 2 for x in xs) / len(xs)) ** 0.5


def ref_hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n)


def zero_shot_by_seed(runs: list[dict], protocol: str, dataset: str, metric: str) -> dict[int, float]:
    """Per seed: the mean over that seed's records of the zero-shot value (a zeroshot run: its own metric)."""
    by_seed: dict[int, list[float]] = {}
    for r in runs:
        if (r["protocol"], r["dataset"]) != (protocol, dataset):
            continue
        value = r["metrics"] if r["method"] == "zeroshot" else r["zero_shot"]["metrics"]
        by_seed.setdefault(r["seed"], []).append(value[metric]["acc"])
    return {s: ref_mean(v) for s, v in by_seed.items()}


def seeds_of(runs: list[dict], protocol: str, dataset: str, method: str, shots: int, metric: str) -> dict[int, float]:
    return {r["seed"]: r["metrics"][metric]["acc"] for r in runs
            if (r["protocol"], r["dataset"], r["method"], r["shots"]) == (protocol, dataset, method, shots)}


# ---------------------------------------------------------------------- figure inspection

def figure(figures: list, name: str):
    return dict(figures)[name]


def axes(fig):
    (ax,) = fig.axes
    return ax


def reference_lines(ax) -> dict[str, float]:
    """gid ``zero-shot:<label>`` -> the y of that horizontal line."""
    found = {}
    for line in ax.get_lines():
        gid = line.get_gid() or ""
        if gid.startswith("zero-shot:"):
            ys = set(line.get_ydata())
            assert len(ys) == 1, "a reference line is horizontal"
            found[gid.removeprefix("zero-shot:")] = float(ys.pop())
    return found


def error_bars(ax, label: str) -> list[tuple[float, float, float]]:
    """(x, centre, half-length) of each error bar of the series ``label``."""
    for collection in ax.collections:
        if collection.get_gid() == f"errorbar:{label}":
            return [(float(a[0]), float((a[1] + b[1]) / 2), float((b[1] - a[1]) / 2))
                    for a, b in collection.get_segments()]
    return []


def series(ax) -> dict:
    """label -> Line2D of the data lines (not the references, not the error bars' caps)."""
    return {line.get_label(): line for line in ax.get_lines()
            if not line.get_label().startswith("_") and not (line.get_gid() or "").startswith("zero-shot:")}


def curve(ax, label: str):
    (line,) = [x for x in ax.get_lines() if x.get_label() == label]
    return list(line.get_xdata()), list(line.get_ydata())


def all_text(fig) -> list[str]:
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in texts if t]


@pytest.fixture(scope="module")
def fs_runs() -> list[dict]:
    return few_shot_records()


@pytest.fixture(scope="module")
def fs_figures(fs_runs):
    return get_protocol("few_shot").figures(quiet_aggregate(fs_runs))


@pytest.fixture(scope="module")
def b2n_runs() -> list[dict]:
    return base2new_records()


@pytest.fixture(scope="module")
def b2n_figures(b2n_runs):
    return get_protocol("base2new").figures(quiet_aggregate(b2n_runs))


# -------------------------------------------------------------------------------------------------- tests

def test_few_shot_zero_shot_is_a_reference_line_at_the_records_mean(fs_runs, fs_figures) -> None:
    per_dataset = {d: zero_shot_by_seed(fs_runs, "few_shot", d, "all") for d in FS_DATASETS}
    for dataset in FS_DATASETS:
        lines = reference_lines(axes(figure(fs_figures, dataset)))
        assert lines == {"zero-shot CLIP": pytest.approx(ref_mean(list(per_dataset[dataset].values())))}
    average = reference_lines(axes(figure(fs_figures, "average")))
    expected = ref_mean([ref_mean(list(per_dataset[d].values())) for d in FS_DATASETS])
    assert average == {"zero-shot CLIP": pytest.approx(expected)}


def test_zeroshot_runs_are_the_reference_not_a_point_at_16_shots(fs_runs, fs_figures) -> None:
    for dataset in FS_DATASETS:  # no marker at the zeroshot runs' mean near 16 shots, whatever draws it
        zs = ref_mean([r["metrics"]["all"]["acc"] for r in fs_runs if (r["method"], r["dataset"]) == ("zeroshot", dataset)])
        ax = axes(figure(fs_figures, dataset))
        points = [(x, y) for line in ax.get_lines() if line.get_marker() not in (None, "None", "", " ")
                  for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)]
        assert points and not [p for p in points if abs(p[1] - zs) < 1e-6 and 8 < p[0] < 32], dataset
    for name, fig in fs_figures:
        ax = axes(fig)
        assert sorted(series(ax)) == sorted(FS_METHODS), name
        assert all(len(line.get_xdata()) == len(SHOTS) for line in series(ax).values()), name
    # only method=zeroshot runs, no zero_shot entries: they alone give the line, and no curve
    alone = [r for r in fs_runs if r["method"] == "zeroshot" and r["dataset"] == "dtd"]
    (_, fig), _ = get_protocol("few_shot").figures(quiet_aggregate(alone))
    ax = axes(fig)
    assert reference_lines(ax) == {"zero-shot CLIP": pytest.approx(ref_mean([r["metrics"]["all"]["acc"] for r in alone]))}
    assert series(ax) == {} and len(ax.collections) == 0  # no point, no error bar


def test_few_shot_error_bars_are_population_std_over_seeds(fs_runs, fs_figures) -> None:
    for dataset in FS_DATASETS:
        ax = axes(figure(fs_figures, dataset))
        for method in FS_METHODS:
            bars = error_bars(ax, method)
            xs, ys = curve(ax, method)
            expected = []
            for shots in SHOTS:
                values = list(seeds_of(fs_runs, "few_shot", dataset, method, shots, "all").values())
                if len(values) > 1:  # one seed: no bar
                    expected.append((shots, ref_mean(values), ref_pstd(values)))
            assert len(bars) == len(expected)
            for (x, centre, half), (shots, m, s) in zip(bars, expected, strict=True):
                assert x == pytest.approx(xs[SHOTS.index(shots)]) and centre == pytest.approx(m)
                assert half == pytest.approx(s) and half > 0
            assert len(xs) == len(SHOTS) and ys == pytest.approx(
                [ref_mean(list(seeds_of(fs_runs, "few_shot", dataset, method, k, "all").values())) for k in SHOTS])
    one_seed_x = curve(axes(figure(fs_figures, "dtd")), "kgcoop")[0][SHOTS.index(ONE_SEED[2])]
    assert all(abs(x - one_seed_x) > 1e-9 for x, _, _ in error_bars(axes(figure(fs_figures, "dtd")), "kgcoop"))


def test_average_curve_error_bar_is_std_of_per_seed_average(fs_runs, fs_figures) -> None:
    ax = axes(figure(fs_figures, "average"))
    bars = {round(c, 6): h for _, c, h in error_bars(ax, "coop")}
    for shots in SHOTS:
        per_dataset = [seeds_of(fs_runs, "few_shot", d, "coop", shots, "all") for d in FS_DATASETS]
        per_seed = [ref_mean([v[s] for v in per_dataset]) for s in SEEDS]
        centre = ref_mean([ref_mean(list(v.values())) for v in per_dataset])
        assert bars[round(centre, 6)] == pytest.approx(ref_pstd(per_seed))


def test_coinciding_points_are_dodged(fs_runs, fs_figures) -> None:
    ax = axes(figure(fs_figures, "eurosat"))
    at4 = {m: (curve(ax, m)[0][SHOTS.index(4)], curve(ax, m)[1][SHOTS.index(4)]) for m in FS_METHODS}
    assert at4["coop"][1] == pytest.approx(at4["kgcoop"][1])  # the same accuracy ...
    assert at4["coop"][0] != pytest.approx(at4["kgcoop"][0], rel=1e-3)  # ... drawn side by side
    assert all(2 ** -0.2 < x / 4 < 2 ** 0.2 for x, _ in at4.values())  # near their tick
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in SHOTS]


def test_accuracy_axes_stop_at_100_and_fit_the_data(fs_figures, b2n_figures) -> None:
    for name, fig in [*fs_figures, *b2n_figures]:
        low, high = axes(fig).get_ylim()
        assert 0 <= low < high <= 100, name
    low, high = axes(figure(fs_figures, "eurosat")).get_ylim()
    assert high == 100 and low > 20  # curves: the data range (lowest point 48.x), not 0-100
    assert axes(figure(b2n_figures, f"{BACKBONE}_shots16")).get_ylim()[0] == 0  # bars start at 0


def test_labels_name_the_datasets_averaged(fs_runs, b2n_runs, fs_figures, b2n_figures) -> None:
    for name, fig in [*fs_figures, *b2n_figures]:
        assert not [t for t in all_text(fig) if " ds)" in t], name
    assert axes(figure(fs_figures, "average")).get_title() == "Few-shot, average over 2 datasets"
    assert "average over 3 datasets" in axes(figure(b2n_figures, f"{BACKBONE}_shots16")).get_title()
    one = [r for r in b2n_runs if r["dataset"] == "dtd"]
    (_, fig), = get_protocol("base2new").figures(quiet_aggregate(one))
    assert axes(fig).get_title().startswith("Base-to-new on dtd")


def test_base2new_bars_with_zero_shot_group_and_seed_spread(b2n_runs, b2n_figures) -> None:
    ax = axes(figure(b2n_figures, f"{BACKBONE}_shots16"))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["zero-shot CLIP", *B2N_METHODS]  # no zeroshot group
    heights = {c.get_label(): [b.get_height() for b in c] for c in ax.containers if c.get_label() in
               ("Base", "New", "HM")}
    zs = {m: ref_mean([ref_mean(list(zero_shot_by_seed(b2n_runs, "base2new", d, m).values())) for d in B2N_DATASETS])
          for m in ("base", "new")}
    expected = {"Base": [zs["base"]], "New": [zs["new"]], "HM": [ref_hm(zs["base"], zs["new"])]}
    spreads: dict[str, list[float]] = {"Base": [], "New": []}
    for method in B2N_METHODS:
        bn = {}
        for metric, series in (("base", "Base"), ("new", "New")):
            per_dataset = [seeds_of(b2n_runs, "base2new", d, method, 16, metric) for d in B2N_DATASETS]
            bn[metric] = ref_mean([ref_mean(list(v.values())) for v in per_dataset])
            expected[series].append(bn[metric])
            spreads[series].append(ref_pstd([ref_mean([v[s] for v in per_dataset]) for s in SEEDS]))
        expected["HM"].append(ref_hm(bn["base"], bn["new"]))
    for series, values in expected.items():
        assert heights[series] == pytest.approx(values), series
    for series in ("Base", "New"):
        halves = [h for _, _, h in error_bars(ax, series)]
        zs_spread = ref_pstd([ref_mean([zero_shot_by_seed(b2n_runs, "base2new", d, series.lower())[s]
                                        for d in B2N_DATASETS]) for s in SEEDS])
        assert halves == pytest.approx([zs_spread, *spreads[series]]), series
    assert error_bars(ax, "HM") == []  # HM of the means: not a per-seed statistic
    hatched = [b.get_x() for c in ax.containers if c.get_label() in ("Base", "New", "HM") for b in c if b.get_hatch()]
    assert len(hatched) == 3 and all(x < 0.5 for x in hatched)  # the zero-shot group, first


def test_plot_writes_each_figure_as_a_png(fs_runs, tmp_path: Path) -> None:
    """``plot`` is a thin wrapper: one ``few_shot_<name>.png`` per figure of ``figures``."""
    agg = quiet_aggregate(fs_runs)
    figures = get_protocol("few_shot").figures(agg)
    written = get_protocol("few_shot").plot(agg, tmp_path)
    assert [p.name for p in written] == [f"few_shot_{name}.png" for name, _ in figures]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
        assert width > height > 300  # the legend, right of the axes, is inside the image
        assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no partial files left
