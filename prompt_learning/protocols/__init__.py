"""Evaluation protocols: pure functions from a dataset's splits to a training + evaluation task."""

from prompt_learning.protocols.task import (
    PROTOCOLS,
    TRANSFER_PROTOCOLS,
    EvalSet,
    Task,
    build_task,
    harmonic_mean,
)

__all__ = ["PROTOCOLS", "TRANSFER_PROTOCOLS", "EvalSet", "Task", "build_task", "harmonic_mean"]
