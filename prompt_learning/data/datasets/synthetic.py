"""``dataset=synthetic``: the embedded colour x shape default (see ``prompt_learning.data.synthetic``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.synthetic import CLASSNAMES, TEMPLATE, SyntheticImageLoader
from prompt_learning.data.types import DatasetSplits, Datum


def _split(split: str, per_class: int) -> list[Datum]:
    n = len(CLASSNAMES)
    return [Datum(f"{split}/{i}/{i % n}", i % n, CLASSNAMES[i % n]) for i in range(per_class * n)]


def build_synthetic(cfg: Mapping[str, Any]) -> DatasetSplits:
    """Train / val / test pools of ``{train,val,test}_per_class`` rendered images per class."""
    return DatasetSplits(
        name="synthetic",
        train=_split("train", int(cfg.get("train_per_class", 32))),
        val=_split("val", int(cfg.get("val_per_class", 8))),
        test=_split("test", int(cfg.get("test_per_class", 20))),
        classnames=CLASSNAMES,
        template=str(cfg.get("template") or TEMPLATE),
        load_image=SyntheticImageLoader(int(cfg.get("render_seed", 0)), int(cfg.get("image_size", 64))),
        info={"render_seed": int(cfg.get("render_seed", 0))},
    )
