"""Classify images with a learned prompt; writes a CSV of the top-k classes and probabilities.

    uv run scripts/predict.py export=outputs/.../export images=photos/ classnames=classes.txt
    uv run scripts/predict.py export=outputs/.../export images='shots/*.jpg' classnames='cat,dog,owl' top_k=2 out=preds.csv

The command itself is prompt_learning/cli/predict.py (installed: ``pl-predict``); ``--help`` lists the options.
"""

from prompt_learning.cli.predict import main

if __name__ == "__main__":
    main()
