"""Classify images with a learned prompt; writes a CSV of the top-k classes and probabilities.

    uv run scripts/predict.py export=outputs/.../export images=photos/ classnames=classes.txt
    uv run scripts/predict.py export=outputs/.../export images='shots/*.jpg' classnames='cat,dog,owl' top_k=2 out=preds.csv
"""

import sys

from prompt_learning.errors import ConfigurationError
from prompt_learning.export import PromptedCLIP
from prompt_learning.export.predict import image_paths, predict_files, read_classnames, write_predictions
from prompt_learning.user_errors import exit_on_user_error

KEYS = {"export": None, "images": None, "classnames": None, "out": "predictions.csv", "top_k": "5",
        "batch_size": "32", "device": None}


def parse(argv: list[str]) -> dict[str, str]:
    args = dict(KEYS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise ConfigurationError(f"Unknown argument {arg!r}; use key=value with keys {sorted(KEYS)}.")
        args[key] = value
    missing = [k for k in ("export", "images", "classnames") if not args[k]]
    if missing:
        raise ConfigurationError(f"Missing {', '.join(f'{k}=...' for k in missing)} (see the usage in scripts/predict.py).")
    return args


if __name__ == "__main__":
    with exit_on_user_error():
        args = parse(sys.argv[1:])
        model = PromptedCLIP.from_pretrained(args["export"], device=args["device"])
        classnames, paths, top_k = read_classnames(args["classnames"]), image_paths(args["images"]), int(args["top_k"])
        rows, skipped = predict_files(model, paths, classnames, top_k, int(args["batch_size"]))
        write_predictions(args["out"], rows, min(top_k, len(classnames)))
        print(f"{len(rows)} images classified -> {args['out']}" + (f"; {len(skipped)} unreadable, skipped: "
              + ", ".join(p for p, _ in skipped[:5]) if skipped else ""))
