"""The embedded default: packaged tiny CLIP weights load through the checkpoint path; the demo runs."""

from __future__ import annotations

import pytest

from prompt_learning.backbone import TINY_SYNTHETIC_WEIGHTS, FrozenCLIP
from prompt_learning.backbone.weights import sha256_of
from prompt_learning.engine.run import train_and_test


def test_packaged_weights_load_as_a_local_checkpoint() -> None:
    backbone = FrozenCLIP("tiny_synthetic", "packaged")
    ident = backbone.identity()
    assert ident["checkpoint"] == str(TINY_SYNTHETIC_WEIGHTS)
    assert ident["checkpoint_sha256"] == sha256_of(TINY_SYNTHETIC_WEIGHTS)
    assert TINY_SYNTHETIC_WEIGHTS.stat().st_size <= 15 * 2**20
    assert (backbone.text_width, backbone.vision_width, backbone.text_depth) == (96, 96, 3)


@pytest.mark.slow
def test_demo_configuration_runs_end_to_end(run_cfg) -> None:
    record = train_and_test(run_cfg("experiment=demo", "dataset.test_per_class=20", "logger=none"))
    zero_shot = record["zero_shot"]["metrics"]
    assert set(record["metrics"]) == set(zero_shot) == {"base", "new"}
    # Zero-shot is far above chance (1/32) but imperfect: the task domain differs from pretraining.
    assert 10 < zero_shot["base"]["acc"] < 90 and 10 < zero_shot["new"]["acc"] < 90
