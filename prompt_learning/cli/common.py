"""What every command shares: one-line warnings, and ``key=value`` arguments for argparse.

Neither Hydra nor Lightning is imported here (the predict and interpret commands use this module).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from prompt_learning.registry import did_you_mean


def warning_line(message: Warning | str, category: type[Warning]) -> str:
    """A warning as one line without file, line number or source: ``warning: <message>`` for user
    warnings (ours and libraries'), ``<Category>: <message>`` for the other kinds."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    label = "warning" if issubclass(category, UserWarning) else category.__name__
    return f"{label}: {text}"


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` replacement: :func:`warning_line` on stderr (``file`` if given)."""
    stream = file if file is not None else sys.stderr
    try:
        stream.write(warning_line(message, category) + "\n")
    except OSError:
        pass  # stderr closed: the warning is lost, as with the default hook


def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   line: str | None = None) -> str:
    """``warnings.formatwarning`` replacement, for code that formats warnings itself (logging)."""
    return warning_line(message, category) + "\n"


def install_warning_format() -> None:
    """Print every Python warning of this process as one line (called first by each command's ``main``).
    Lightning replaces ``warnings.formatwarning`` when imported; ``showwarning`` is what prints."""
    warnings.showwarning = show_warning
    warnings.formatwarning = format_warning


def key_value_options(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """``key=value`` arguments as ``--key=value`` for ``parser`` (the documented ``export=... top_k=3``
    style); options and other arguments pass unchanged. An unknown key stops with the close matches."""
    keys = {opt[2:] for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-") or not key.replace("_", "").replace("-", "").isalnum():
            out.append(arg)
        elif key in keys or key.replace("_", "-") in keys:
            out.append(f"--{key.replace('_', '-')}={value}")
        else:
            names = sorted(k.replace("-", "_") for k in keys if k != "help")
            parser.error(f"unknown argument {arg!r}.{did_you_mean(key, names)} Keys: {', '.join(names)}.")
    return out


def new_parser(doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """An argparse parser whose description is the command's docstring (its examples included), shown
    as written; options are not abbreviated (``--ex`` is not ``--export``)."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   allow_abbrev=False, **kwargs)
