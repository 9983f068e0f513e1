"""The class set an evaluation or a training run is over: the bottom-layer type every layer shares."""

from __future__ import annotations

from dataclasses import dataclass


def prompt_name(name: str) -> str:
    """How a class name enters a prompt: underscores read as spaces (CoOp's ``name.replace("_", " ")``;
    dataset class names keep their underscores on disk and in results)."""
    return name.replace("_", " ")


@dataclass(frozen=True)
class ClassSet:
    """The class names an evaluation (or training) is over, plus the dataset's own template and name
    (methods with per-dataset template tables, such as ProGrad and KgCoOp, look the name up)."""

    names: tuple[str, ...]
    template: str = "a photo of a {}."
    dataset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))

    def __len__(self) -> int:
        return len(self.names)
