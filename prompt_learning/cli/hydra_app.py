"""Running the Hydra apps (train, eval) from a ``main(argv)``, and the config groups their ``--help`` lists.

``--help`` is Hydra's own, laid out by ``configs/hydra/help/prompt_learning.yaml``, whose group list comes
from the ``app_config_groups`` resolver here: Hydra's list without the internal ``schema/*`` groups (the
structured-config schemas that every group's YAML extends, not choices for a user).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence

from omegaconf import OmegaConf

HIDDEN_GROUPS = ("schema", "hydra")  # prefixes of the groups --help leaves out (hydra/*: --hydra-help)


def app_config_groups() -> str:
    """``group: option, option`` lines of the running app's config groups, internal ones left out: what
    Hydra's ``$APP_CONFIG_GROUPS`` lists, read from the search path's sources directly (Hydra's own
    listing builds a fresh config repository for every group, seconds per call)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    if not GlobalHydra.instance().is_initialized():
        return ""
    sources = GlobalHydra.instance().config_loader().get_sources()

    def listed(group: str, kind: ObjectType) -> list[str]:
        found = {name for source in sources if source.is_group(group) for name in source.list(group, kind)}
        return sorted(found)

    options, pending = {}, [g for g in listed("", ObjectType.GROUP) if g not in HIDDEN_GROUPS]
    while pending:
        group = pending.pop(0)
        if configs := listed(group, ObjectType.CONFIG):
            options[group] = configs
        pending.extend(f"{group}/{sub}" for sub in listed(group, ObjectType.GROUP))
    return "".join(f"{group}: {', '.join(options[group])}\n" for group in sorted(options))


def register_help_resolver() -> None:
    """Make ``${app_config_groups:}`` available to the help template (idempotent)."""
    OmegaConf.register_new_resolver("app_config_groups", app_config_groups, replace=True)


@contextlib.contextmanager
def arguments(argv: Sequence[str]) -> Iterator[None]:
    """``sys.argv[1:]`` replaced by ``argv`` while Hydra parses it (Hydra reads ``sys.argv`` only)."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "prompt_learning", *argv]
    try:
        yield
    finally:
        sys.argv = saved


def run_app(app: Callable[[], object], argv: Sequence[str]) -> None:
    """Run a ``@hydra.main`` function on ``argv`` (``--help`` prints the help and exits with 0); Hydra's
    global state is cleared before and after, so that a process (a test) may run apps one after another."""
    from hydra.core.global_hydra import GlobalHydra

    register_help_resolver()
    GlobalHydra.instance().clear()
    try:
        with arguments(argv):
            app()
    finally:
        GlobalHydra.instance().clear()
