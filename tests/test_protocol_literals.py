"""Protocols are looked up in the registry, never branched on by name: no string literal outside
``prompt_learning/protocols/`` (in ``prompt_learning/`` or ``scripts/``) names a registered protocol.
Docstrings and comments may; f-string parts may not."""

from __future__ import annotations

import ast
import io
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import pytest

from prompt_learning.protocols import PROTOCOLS, Protocol, register_protocol
from prompt_learning.results import AggregationWarning, aggregate, print_summary
from prompt_learning.results.aggregate import to_markdown

ROOT = Path(__file__).parents[1]
EXEMPT = ROOT / "prompt_learning" / "protocols"


def checked_files() -> list[Path]:
    files = [*(ROOT / "prompt_learning").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]
    return sorted(p for p in files if EXEMPT not in p.parents)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constant nodes that are docstrings (module, class, function)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                ids.add(id(first.value))
    return ids


def protocol_literals(source: str, names: Iterable[str], filename: str = "<string>") -> list[str]:
    """``file:line: 'literal' names <protocol>`` for every string constant (f-string parts included,
    docstrings excluded) that holds one of ``names`` as a whole word."""
    patterns = {name: re.compile(rf"\b{re.escape(name)}\b") for name in names}
    tree = ast.parse(source, filename=filename)
    skip = _docstrings(tree)
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            for name, pattern in patterns.items():
                if pattern.search(node.value):
                    found.append((node.lineno, node.col_offset, f"{filename}:{node.lineno}: {node.value!r} names "
                                                                f"protocol {name!r}"))
    return [message for *_, message in sorted(found)]


def test_checker_catches_a_planted_literal() -> None:
    source = ('"""Module docstring: base2new is fine here."""\n'
              "def f(protocol):\n"
              '    """So is few_shot in a docstring."""\n'
              "    x = 'few_shot_index'  # not a whole word; a comment: base2new\n"
              "    if protocol == 'base2new':\n"
              "        return f'protocol={protocol} or domain_gen'\n")
    found = protocol_literals(source, ["base2new", "few_shot", "domain_gen"], "planted.py")
    assert found == ["planted.py:5: 'base2new' names protocol 'base2new'",
                     "planted.py:6: ' or domain_gen' names protocol 'domain_gen'"]


def test_the_registry_names_the_built_in_protocols() -> None:
    assert {"base2new", "few_shot", "cross_dataset", "domain_gen"} <= set(PROTOCOLS.names())


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_protocol_name_literals_outside_protocols(path: Path) -> None:
    found = protocol_literals(path.read_text(encoding="utf-8"), PROTOCOLS.names(), str(path.relative_to(ROOT)))
    assert not found, ("Look the protocol up in the registry (get_protocol(name), its attributes and hooks) "
                       "instead of naming it:\n" + "\n".join(found))


def test_a_protocol_registered_outside_the_package_aggregates_through_its_own_hooks() -> None:
    """Registering one instance is all a new protocol takes: results validate, summarise, tabulate and print
    it through its hooks; a protocol nobody registered gets the generic table."""

    class HeldOut(Protocol):
        name = "held_out_test"
        title = "Held-out test"
        order = 5

        def build_task(self, splits, shots, seed, targets=()):
            raise NotImplementedError

        def required_metrics(self, record):
            return ("held_out",)

        def summarize_groups(self, groups, found):
            return [max(g.metrics["held_out"].mean for g in groups)]

        def markdown(self, agg, groups):
            return [f"best held-out {agg.summaries[self.name][0]:.2f}"]

        def summary_lines(self, agg):
            return [f"{self.name} best {agg.summaries[self.name][0]:.2f}"]

    def record(protocol: str, seed: int, metrics: dict[str, float]) -> dict:
        return {"method": "coop", "backbone": {"name": "B"}, "dataset": "dtd", "protocol": protocol, "shots": 4,
                "seed": seed, "metrics": {k: {"acc": v} for k, v in metrics.items()}}

    register_protocol(HeldOut())
    try:
        records = [record("held_out_test", s, {"held_out": 60.0 + s}) for s in (1, 2, 3)]
        records += [record("held_out_test", 4, {"other": 1.0}), record("never_registered", 1, {"all": 5.0})]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AggregationWarning)
            agg = aggregate(records)
        assert [str(w.message) for w in caught] == ["Skipped a record: held_out_test result without metric(s) "
                                                    "held_out."]
        md = to_markdown(agg)
        assert "## Held-out test (`held_out_test`)\n\nbest held-out 62.00" in md
        assert md.index("(`held_out_test`)") < md.index("## never_registered (`never_registered`)")
        assert "| coop | dtd | B | 4 | [1] | all 5.00 ± 0.00 |" in md
        out = io.StringIO()
        print_summary(agg, out)
        assert "held_out_test best 62.00" in out.getvalue()
    finally:
        PROTOCOLS.unregister("held_out_test")
