"""Print the nearest vocabulary tokens of each learned context vector of an export.

    uv run scripts/interpret_prompt.py export=outputs/.../export top_k=5

The command itself is prompt_learning/cli/interpret.py (installed: ``pl-interpret``).
"""

from prompt_learning.cli.interpret import main

if __name__ == "__main__":
    main()
