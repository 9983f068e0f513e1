"""Print the nearest vocabulary tokens of each learned context vector of an export.

examples:
  pl-interpret export=outputs/.../export top_k=5
  pl-interpret --export outputs/.../export --top-k 5
  (in a checkout: uv run scripts/interpret_prompt.py with the same arguments)

Learned vectors need not lie near any token: the cosine similarities printed say how near they are.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prompt_learning.cli.common import install_warning_format, key_value_options, new_parser
from prompt_learning.user_errors import exit_on_user_error


def parser() -> argparse.ArgumentParser:
    """The command's arguments (``--help`` shows them with the examples above)."""
    p = new_parser(__doc__)
    p.add_argument("--export", required=True, metavar="DIR", help="an export directory (<run_dir>/export)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="tokens per vector (default: %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """``pl-interpret`` / ``scripts/interpret_prompt.py``."""
    install_warning_format()
    p = parser()
    args = p.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, p))
    from prompt_learning.export import load_method
    from prompt_learning.export.interpret import interpret

    with exit_on_user_error():
        print("\n".join(interpret(load_method(args.export), args.top_k)))
