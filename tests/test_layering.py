"""Import layering (docs/architecture.md): Lightning only under engine/; Hydra only in engine/run.py (the config ->
RunSpec entry), engine/loggers.py (instantiating loggers and callbacks from YAML), config/, launch/, cli/ and scripts/;
the library packages, the export path and the predict / interpret scripts load neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "prompt_learning"
HYDRA_ALLOWED = ("prompt_learning/engine/run.py", "prompt_learning/engine/loggers.py", "prompt_learning/config/",
                 "prompt_learning/launch/", "prompt_learning/cli/", "scripts/")
NO_HYDRA_SCRIPTS = ("scripts/predict.py", "scripts/interpret_prompt.py", "prompt_learning/cli/__init__.py",
                    "prompt_learning/cli/common.py", "prompt_learning/cli/predict.py", "prompt_learning/cli/interpret.py",
                    "prompt_learning/cli/aggregate.py")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


FILES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "scripts").glob("*.py")])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layering(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    roots = imported_roots(path)
    if not rel.startswith("prompt_learning/engine/"):
        assert not roots & {"lightning", "pytorch_lightning"}, f"{rel} imports Lightning"
    if not rel.startswith(HYDRA_ALLOWED) or rel in NO_HYDRA_SCRIPTS:
        assert not roots & {"hydra", "omegaconf"}, f"{rel} imports Hydra"


def test_library_packages_import_without_lightning_or_hydra() -> None:
    import subprocess
    import sys

    # The library packages, the export path and what scripts/predict.py and scripts/interpret_prompt.py import
    # (their main() is not called), in one fresh process.
    code = ("import importlib.util, sys\n"
            "import prompt_learning.backbone, prompt_learning.methods, prompt_learning.export, "
            "prompt_learning.data.datasets, prompt_learning.data.checks, prompt_learning.protocols, "
            "prompt_learning.results, prompt_learning.user_errors\n"
            "for path in ('scripts/predict.py', 'scripts/interpret_prompt.py'):\n"
            "    spec = importlib.util.spec_from_file_location('script_' + path[8:-3], path)\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "bad = [m for m in ('lightning', 'hydra', 'omegaconf') if m in sys.modules]; print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_module_over_400_lines() -> None:
    """Small modules with one job each: none in the package is over 400 lines."""
    long = {p.relative_to(ROOT).as_posix(): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
