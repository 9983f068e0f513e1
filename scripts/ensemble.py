"""Test several finished runs (seeds) as one ensemble and write ensemble-<hash>.json next to them.

    uv run scripts/ensemble.py outputs/base2new/synthetic/coop/tiny_synthetic/shots_16/seed_*

The command itself is prompt_learning/cli/ensemble.py.
"""

from prompt_learning.cli.ensemble import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
