"""One registry mechanism for everything chosen by name: methods, datasets and protocols.

Registration is explicit: a decorator (``@METHODS.register``) or a call (``DATASETS.register("name",
builder)``), and it works the same for code outside this package, which registers its own entries by
being imported (``plugins=[my_package.my_method]`` on the command line, or a plain ``import``). Built-in
entries are registered by importing their modules, which each registry does once, on first look-up.

Unknown names get one error, written once here: the kind, the name, close matches and every choice.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from prompt_learning.errors import ConfigurationError

T = TypeVar("T")


def close_matches(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Choices that look like ``value`` (a typo's likely intent), best first."""
    return difflib.get_close_matches(str(value), [str(c) for c in choices], n=n)


def did_you_mean(value: str, choices: Iterable[str], n: int = 3, prefix: str = "", quote: bool = True) -> str:
    """`` Did you mean 'a', 'b'?`` (empty when nothing is close); ``prefix`` is put before each match."""
    close = [prefix + c for c in close_matches(value, choices, n)]
    return f" Did you mean {', '.join(map(repr, close) if quote else close)}?" if close else ""


def unknown_choice(kind: str, value: Any, choices: Iterable[str]) -> ConfigurationError:
    """The error for a name that is not among ``choices``: what it is, close matches, and every choice."""
    choices = sorted(str(c) for c in choices)
    return ConfigurationError(f"Unknown {kind} {value!r}.{did_you_mean(str(value), choices)} Available: {choices}.")


class Registry(Generic[T]):
    """Entries of one kind by name. ``builtins`` are the modules that register the built-in entries
    (``package.*``: every module of the package); they are imported on the first look-up."""

    def __init__(self, kind: str, builtins: Iterable[str] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._builtins = tuple(builtins)
        self._loaded = False

    def register(self, *args: Any, name: str | None = None, replace: bool = False) -> Any:
        """Register an entry under a name (default: its ``name`` attribute) and return it. Forms:
        ``@registry.register``, ``@registry.register("x")``, ``registry.register(obj)``,
        ``registry.register("x", obj)``. Another object under a taken name is an error unless ``replace``."""
        if args and isinstance(args[0], str):
            name, args = args[0], args[1:]
        if len(args) > 1:
            raise TypeError("register() takes at most a name and one entry")
        entry = args[0] if args else None
        if entry is None:
            return lambda obj: self.register(obj, name=name, replace=replace)
        key = name if name is not None else getattr(entry, "name", None)
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"Cannot register {entry!r} as a {self.kind}: give it a `name` attribute or "
                                     f"pass name=...")
        current = self._entries.get(key)
        if current is not None and current is not entry and not replace and not _same_definition(current, entry):
            raise ConfigurationError(f"A {self.kind} named {key!r} is registered already ({_where(current)}); "
                                     f"choose another name, or pass replace=True to override it.")
        self._entries[key] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtins:
                if module.endswith(".*"):  # every module of a package
                    package = importlib.import_module(module[:-2])
                    for info in pkgutil.iter_modules(package.__path__):
                        importlib.import_module(f"{package.__name__}.{info.name}")
                else:
                    importlib.import_module(module)

    def get(self, name: str) -> T:
        """The entry named ``name``, or a :class:`ConfigurationError` with close matches."""
        self._load_builtins()
        if name not in self._entries:
            raise unknown_choice(self.kind, name, self._entries)
        return self._entries[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the entry named ``name`` (a class or a builder) with the arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def items(self) -> dict[str, T]:
        self._load_builtins()
        return dict(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def _same_definition(a: Any, b: Any) -> bool:
    """A module imported twice (as a file and as a package module) defines equal-named objects again."""
    return (getattr(a, "__qualname__", None) == getattr(b, "__qualname__", object())
            and getattr(a, "__module__", None) == getattr(b, "__module__", object()))


def _where(entry: Any) -> str:
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', type(entry).__name__)}"


def import_plugins(plugins: Iterable[str]) -> list[str]:
    """Import the modules that register outside methods, datasets or protocols: dotted module names
    (``my_package.my_method``) or paths to ``.py`` files (``examples/coop_learned_scale.py``). Idempotent.
    Returns the plugins as they can be imported again from anywhere: module names, and absolute paths."""
    imported = []
    for plugin in plugins:
        plugin = str(plugin)
        if plugin.endswith(".py") or "/" in plugin or "\\" in plugin:
            path = Path(plugin).expanduser().resolve()
            if not path.is_file():
                raise ConfigurationError(f"plugins: {plugin!r} is not a Python file; give a module name "
                                         f"(my_package.my_method) or the path of a .py file.")
            module_name = plugin_module_name(path)  # one per file: plugins named alike in two folders both load
            if module_name not in sys.modules:
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                try:
                    spec.loader.exec_module(module)
                except Exception as exc:
                    del sys.modules[module_name]
                    raise ConfigurationError(f"plugins: importing {str(path)!r} failed with "
                                             f"{type(exc).__name__}: {exc}") from exc
            imported.append(str(path))
        else:
            try:
                importlib.import_module(plugin)
            except ModuleNotFoundError as exc:
                if exc.name != plugin and not plugin.startswith(f"{exc.name}."):
                    raise ConfigurationError(f"plugins: {plugin!r} needs {exc.name!r}, which is not installed "
                                             f"({exc}).") from exc
                raise ConfigurationError(f"plugins: cannot import {plugin!r} ({exc}); give an importable module "
                                         f"name or the path of a .py file.") from exc
            imported.append(plugin)
    return imported


def plugin_module_name(path: str | Path) -> str:
    """The name under which a ``.py`` plugin is imported (in ``sys.modules``)."""
    resolved = Path(path).expanduser().resolve()
    return f"prompt_learning_plugin_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
