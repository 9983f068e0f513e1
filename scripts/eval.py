"""Re-test a finished run from its export and write <run_dir>/eval.json.

    uv run scripts/eval.py run_dir=outputs/base2new/synthetic/coop/tiny_synthetic/shots_16/seed_1-1563b16a

The command itself is prompt_learning/cli/eval.py (installed: ``pl-eval``).
"""

from prompt_learning.cli.eval import check_run_dir, main  # noqa: F401  (check_run_dir: used by tests)

if __name__ == "__main__":
    main()
