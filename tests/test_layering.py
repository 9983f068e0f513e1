"""Import layering (design.md C2): Lightning only under engine/, Hydra only in engine/run.py, config/, scripts/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "prompt_learning"
HYDRA_ALLOWED = ("prompt_learning/engine/run.py", "prompt_learning/config/", "scripts/")


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
    if not rel.startswith(HYDRA_ALLOWED):
        assert not roots & {"hydra", "omegaconf"}, f"{rel} imports Hydra"


def test_library_packages_import_without_lightning_or_hydra() -> None:
    import subprocess
    import sys

    code = ("import sys; import prompt_learning.backbone, prompt_learning.methods, prompt_learning.export, "
            "prompt_learning.data.datasets, prompt_learning.data.checks, prompt_learning.protocols, prompt_learning.results; "
            "bad = [m for m in ('lightning', 'hydra', 'omegaconf') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
