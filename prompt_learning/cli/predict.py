"""Classify image files with a learned prompt; writes a CSV of the top-k classes and their probabilities.

examples:
  pl-predict export=outputs/.../export images=photos/ classnames=classes.txt
  pl-predict export=outputs/.../export images='shots/*.jpg' classnames='cat,dog,owl' top_k=2 out=preds.csv
  pl-predict --export outputs/.../export --images photos/ --classnames classes.txt --top-k 3
  (in a checkout: uv run scripts/predict.py with the same arguments)

Every option can be given as key=value or as --key value. Images: a file, a folder (searched
recursively) or a glob; class names: a text file with one per line, or a comma-separated list.
Unreadable images are skipped, each named once on stderr.
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
    p.add_argument("--export", required=True, metavar="DIR", help="an export directory (<run_dir>/export) or hf-hub:<owner>/<name>")
    p.add_argument("--images", required=True, metavar="PATH", help="an image file, a folder or a glob")
    p.add_argument("--classnames", required=True, metavar="FILE|LIST", help="a file (one per line) or 'a,b,c'")
    p.add_argument("--out", default="predictions.csv", metavar="CSV", help="output CSV (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes per image (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per batch (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the export's choice)")
    p.add_argument("--backbone", default=None, metavar="PATH",
                   help="the backbone checkpoint, when the export names one that is not on this machine")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """``pl-predict`` / ``scripts/predict.py``."""
    install_warning_format()
    p = parser()
    args = p.parse_args(key_value_options(sys.argv[1:] if argv is None else argv, p))
    from prompt_learning.export import PromptedCLIP
    from prompt_learning.export.predict import image_paths, predict_files, read_classnames, write_predictions

    with exit_on_user_error():
        model = PromptedCLIP.from_pretrained(args.export, backbone=args.backbone, device=args.device)
        classnames, paths = read_classnames(args.classnames), image_paths(args.images)
        rows, skipped = predict_files(model, paths, classnames, args.top_k, args.batch_size)
        write_predictions(args.out, rows, min(args.top_k, len(classnames)))
    for path, reason in skipped:  # reported here only: predict_files returns them and does not log them
        reason = reason.replace(f" {path!r}", "")  # PIL's message repeats the path
        print(f"warning: skipped unreadable image {path}: {reason}", file=sys.stderr)
    print(f"{len(rows)} images classified -> {args.out}" + (f"; {len(skipped)} unreadable skipped" if skipped else ""))
