"""Where the Hydra configs are: inside the installed package, or at the top of a source checkout.

A wheel carries the checkout's top-level ``configs/`` as ``prompt_learning/configs`` (pyproject.toml,
``force-include``); a checkout (and its editable install) reads ``configs/`` next to the package. Every
reader of the configs (composition, the method-schema check, the Hydra apps) asks :func:`config_dir`.
Nothing here depends on the working directory, so the commands run from any directory.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PACKAGED_CONFIGS = PACKAGE_DIR / "configs"  # an installed wheel
CHECKOUT_CONFIGS = PACKAGE_DIR.parent / "configs"  # a source checkout (uv sync installs it editable)


def config_dir() -> Path:
    """The absolute config directory: the packaged one when it exists, else the checkout's ``configs/``."""
    return PACKAGED_CONFIGS if PACKAGED_CONFIGS.is_dir() else CHECKOUT_CONFIGS
