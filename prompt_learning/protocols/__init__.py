"""Evaluation protocols (docs/protocols.md): one module per protocol, each registering a :class:`Protocol`
that builds a run's :class:`Task` from a dataset's splits, summarises its accuracies and aggregates its
results. Look one up with ``get_protocol(name)``; ``PROTOCOLS`` is the registry (``name in PROTOCOLS``,
``tuple(PROTOCOLS)``); ``register_protocol(MyProtocol())`` adds one, also from outside this package."""

from prompt_learning.protocols.base import (
    PROTOCOLS,
    EvalSet,
    Protocol,
    Task,
    build_task,
    get_protocol,
    harmonic_mean,
    register_protocol,
)

__all__ = ["PROTOCOLS", "EvalSet", "Protocol", "Task", "build_task", "get_protocol", "harmonic_mean",
           "register_protocol"]

