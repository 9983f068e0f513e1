"""Launching with Hydra: the callbacks that end a multirun (sweep summary, aggregation, Optuna's best preset)."""
