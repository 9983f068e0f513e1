"""Scripts report a user's error as one ``error:`` line on stderr and exit with status 2, no traceback.

User errors are :class:`~prompt_learning.errors.PromptLearningError` and, when Hydra is in use, its
composition errors. Hydra is never imported here: its error types are looked up only if it is loaded,
so the export and predict scripts stay free of it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from prompt_learning.errors import PromptLearningError


def user_error_types() -> tuple[type[BaseException], ...]:
    """Ours, plus Hydra's and OmegaConf's composition errors when those packages are loaded."""
    types: list[type[BaseException]] = [PromptLearningError]
    for module, name in (("hydra.errors", "HydraException"), ("omegaconf.errors", "OmegaConfBaseException")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            types.append(getattr(loaded, name))
    return tuple(types)


def user_error_message(exc: BaseException) -> str:
    """The one line shown for ``exc``: its message without Hydra's search-path dump, plus its cause."""
    message = str(exc).split("\nConfig search path:")[0].strip()
    if exc.__cause__ is not None and str(exc.__cause__) not in message:
        message += f": {str(exc.__cause__).splitlines()[0]}"
    return message


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a user error into one line on stderr and exit status 2, without a traceback."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, user_error_types()):
            raise
        logging.getLogger("prompt_learning").debug("user error", exc_info=True)
        print(f"error: {user_error_message(exc)}", file=sys.stderr)
        sys.exit(2)
