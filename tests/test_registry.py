"""The one registry mechanism (methods, datasets, protocols): register, list, create, close matches, plugins."""

from __future__ import annotations

import pytest

from prompt_learning.data.datasets import DATASETS, build_dataset, register_dataset
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import METHODS
from prompt_learning.protocols import PROTOCOLS
from prompt_learning.registry import Registry, import_plugins, plugin_module_name


def test_register_as_decorator_call_and_by_name() -> None:
    reg: Registry = Registry("widget")

    @reg.register
    class Alpha:
        name = "alpha"

    @reg.register("beta")
    def make_beta(x: int) -> tuple[str, int]:
        return "beta", x

    reg.register("gamma", dict)
    assert reg.names() == ["alpha", "beta", "gamma"] and "alpha" in reg and len(reg) == 3
    assert reg.get("alpha") is Alpha and reg.create("beta", 3) == ("beta", 3)
    with pytest.raises(ConfigurationError, match=r"Unknown widget 'alpah'\. Did you mean 'alpha'\? Available: "
                                                  r"\['alpha', 'beta', 'gamma'\]"):
        reg.get("alpah")
    with pytest.raises(ConfigurationError, match="registered already"):
        reg.register("gamma", list)
    reg.register("gamma", list, replace=True)
    assert reg.get("gamma") is list
    with pytest.raises(ConfigurationError, match="give it a `name`"):
        reg.register(object())


def test_every_kind_uses_the_same_registry_and_error() -> None:
    for registry, typo in ((METHODS, "copo"), (DATASETS, "dtdd"), (PROTOCOLS, "base2neww")):
        assert isinstance(registry, Registry)
        with pytest.raises(ConfigurationError, match=rf"Unknown {registry.kind} '{typo}'\. Did you mean"):
            registry.get(typo)


def test_outside_code_registers_a_dataset(tmp_path) -> None:
    calls = []

    def build_mine(cfg):
        calls.append(dict(cfg))
        return build_dataset({"name": "synthetic", "test_per_class": 1, "image_size": 32})

    register_dataset("mine_for_test", build_mine)
    try:
        splits = build_dataset({"name": "mine_for_test", "option": 1})
        assert calls == [{"name": "mine_for_test", "option": 1}] and len(splits.classnames) == 64
    finally:
        DATASETS.unregister("mine_for_test")


def test_plugins_import_by_path_and_by_module_name(tmp_path, monkeypatch) -> None:
    plugin = tmp_path / "plugin_for_registry_test.py"
    plugin.write_text("from prompt_learning.registry import Registry\nLOADED = Registry('x')\n")
    assert import_plugins([str(plugin)]) == [str(plugin.resolve())]
    twin = tmp_path / "other" / "plugin_for_registry_test.py"  # the same file name in another folder
    twin.parent.mkdir()
    twin.write_text("VALUE = 2\n")
    import_plugins([str(twin)])
    import sys

    assert sys.modules[plugin_module_name(twin)].VALUE == 2  # imported too, not taken for the first
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigurationError, match="importing .*broken_plugin.py' failed with RuntimeError: boom"):
        import_plugins([str(broken)])
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_plugins(["plugin_for_registry_test"]) == ["plugin_for_registry_test"]
    with pytest.raises(ConfigurationError, match="not a Python file"):
        import_plugins([str(tmp_path / "missing.py")])
    with pytest.raises(ConfigurationError, match="cannot import 'no_such_module_xyz'"):
        import_plugins(["no_such_module_xyz"])


def test_aggregation_imports_the_plugins_a_run_was_made_with(tmp_path) -> None:
    """A protocol registered by a plugin aggregates with its own summary, found through the records' config."""
    import io
    import json

    from prompt_learning.protocols import PROTOCOLS
    from prompt_learning.results import aggregate, load_results, print_summary

    plugin = tmp_path / "leave_one_out_protocol.py"
    plugin.write_text(
        "from prompt_learning.protocols import Protocol, register_protocol\n"
        "class LeaveOneOut(Protocol):\n"
        "    name, title = 'leave_one_out_test', 'Leave one out'\n"
        "    def build_task(self, splits, shots, seed, targets=()):\n"
        "        raise NotImplementedError\n"
        "    def summary_lines(self, agg):\n"
        "        return [f'leave-one-out groups: {len(agg.groups_of(self.name))}']\n"
        "register_protocol(LeaveOneOut())\n")
    for seed in (1, 2):
        run = tmp_path / "runs" / f"seed_{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({
            "method": "coop", "backbone": {"name": "tiny"}, "dataset": "synthetic", "protocol": "leave_one_out_test",
            "shots": 4, "seed": seed, "metrics": {"all": {"acc": 50.0 + seed}}, "config": {"plugins": [str(plugin)]}}))
    try:
        agg = aggregate(load_results(tmp_path / "runs"))
        out = io.StringIO()
        print_summary(agg, file=out)
        assert "leave-one-out groups: 1" in out.getvalue()
        assert agg.groups[0].metrics["all"].mean == 51.5
    finally:
        PROTOCOLS.unregister("leave_one_out_test")
