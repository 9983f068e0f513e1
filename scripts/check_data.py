"""Check a dataset before training: layout, split file, every image present, class counts.

    uv run scripts/check_data.py dataset=dtd data.root=/path/to/DATA
    uv run scripts/check_data.py dataset=folder dataset.root=/path/to/class_folders shots=16

Exit status 0 when the data is usable, 2 with the problem and its fix otherwise. The command itself is
prompt_learning/cli/check_data.py (installed: ``pl-check-data``).
"""

from prompt_learning.cli.check_data import main

if __name__ == "__main__":
    main()
