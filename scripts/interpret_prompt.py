"""Print the nearest vocabulary tokens of each learned context vector of an export.

    uv run scripts/interpret_prompt.py export=outputs/.../export top_k=5
"""

import sys

from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method
from prompt_learning.export.interpret import interpret
from prompt_learning.user_errors import exit_on_user_error

if __name__ == "__main__":
    with exit_on_user_error():
        args = dict(arg.partition("=")[::2] for arg in sys.argv[1:])
        unknown = sorted(set(args) - {"export", "top_k"})
        if unknown or "export" not in args:
            raise ConfigurationError(f"Usage: interpret_prompt.py export=<dir> [top_k=5] (unknown: {unknown}).")
        print("\n".join(interpret(load_method(args["export"]), int(args.get("top_k", 5)))))
