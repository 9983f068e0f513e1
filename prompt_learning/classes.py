"""The class set an evaluation or a training run is over: the bottom-layer type every layer shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prompt_learning.errors import FormatError

ALIKE_IN_IMAGENET = frozenset({"missile", "sunglasses"})
"""Names that OpenAI's cleaned ImageNet class list (CLIP's zero-shot list, CoOp's ``classnames.txt``,
``open_clip.IMAGENET_CLASSNAMES``) gives to two classes each. They are let through so that ImageNet results
stay comparable with the published ones; any other repeated name is refused."""


def prompt_name(name: str) -> str:
    """How a class name enters a prompt: underscores read as spaces (CoOp's ``name.replace("_", " ")``;
    dataset class names keep their underscores on disk and in results)."""
    return name.replace("_", " ")


def name_key(name: str) -> str:
    """What the text tower tells names apart by: the prompt form, case and runs of spaces ignored (CLIP's
    tokenizer lower-cases and collapses whitespace), so ``"Golden_Retriever"`` and ``"golden retriever"``
    are one name."""
    return " ".join(prompt_name(name).casefold().split())


def check_class_names(names: Sequence[object], sources: Sequence[str] | None = None,
                      what: str = "class list") -> tuple[str, ...]:
    """``names`` as a tuple, when every one is a non-empty string and no two read the same in a prompt
    (:func:`name_key`). Otherwise a :class:`FormatError` naming both sources of a repeated name (or the source
    of an empty one): ``sources[i]`` says where ``names[i]`` came from (a file line, a folder, a key), by
    default its position. The one rule for every class list: datasets, prediction, exports."""
    where = list(sources) if sources is not None else [f"position {i}" for i in range(len(names))]
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise FormatError(f"{what}: the class name at {where[i]} is {name!r}, not text; give class names as "
                              f"strings.")
        key = name_key(name)
        if not key:
            raise FormatError(f"{what}: the class name at {where[i]} is empty ({name!r}); give every class a name.")
        if key in first and key not in ALIKE_IN_IMAGENET:
            j = first[key]
            alike = "" if names[j] == name else f" ({names[j]!r} and {name!r} read the same in a prompt)"
            raise FormatError(f"{what}: the class name {name!r} is given twice, at {where[j]} and at {where[i]}"
                              f"{alike}; two classes with one name cannot be told apart. Rename or merge them.")
        first.setdefault(key, i)
    return tuple(names)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ClassSet:
    """The class names an evaluation (or training) is over, plus the dataset's own template and name
    (methods with per-dataset template tables, such as ProGrad and KgCoOp, look the name up). Names are
    checked by :func:`check_class_names`: none empty, no two alike."""

    names: tuple[str, ...]
    template: str = "a photo of a {}."
    dataset: str | None = None

    def __post_init__(self) -> None:
        what = f"the class list of {self.dataset!r}" if self.dataset else "the class list"
        object.__setattr__(self, "names", check_class_names(tuple(self.names), what=what))

    def __len__(self) -> int:
        return len(self.names)
