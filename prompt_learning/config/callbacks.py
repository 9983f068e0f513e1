"""Old import path of the multirun callbacks (sweep YAMLs and saved ``.hydra`` configs written before they
moved): they live in ``prompt_learning.launch.hydra_callbacks``."""

from prompt_learning.launch.hydra_callbacks import AggregateAfterMultirun, SweepSummary, WriteBestPreset

__all__ = ["AggregateAfterMultirun", "SweepSummary", "WriteBestPreset"]
