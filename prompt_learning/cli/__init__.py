"""The command-line programs: one module per command, each with a ``main(argv=None)``.

Installed, they are the console scripts of pyproject.toml's ``[project.scripts]``; in a checkout,
``scripts/<name>.py`` calls the same ``main``:

=================  ==========================  =====================================================
command            checkout                    does
=================  ==========================  =====================================================
``pl-train``       ``scripts/train.py``        train and test one configuration (Hydra app, sweeps)
``pl-eval``        ``scripts/eval.py``         re-test a finished run from its export (Hydra app)
``pl-predict``     ``scripts/predict.py``      classify image files with a learned prompt, to a CSV
``pl-aggregate``   ``scripts/aggregate.py``    tables over every results.json below a folder
``pl-interpret``   ``scripts/interpret_prompt.py``  nearest vocabulary tokens of learned context vectors
``pl-check-data``  ``scripts/check_data.py``   check a dataset's files before training
=================  ==========================  =====================================================

Outputs go under the current directory (``outputs/`` by default); the configs come with the package.
The predict and interpret commands load neither Hydra nor Lightning.
"""

COMMANDS = {
    "pl-train": "prompt_learning.cli.train:main",
    "pl-eval": "prompt_learning.cli.eval:main",
    "pl-predict": "prompt_learning.cli.predict:main",
    "pl-aggregate": "prompt_learning.cli.aggregate:main",
    "pl-interpret": "prompt_learning.cli.interpret:main",
    "pl-check-data": "prompt_learning.cli.check_data:main",
}
"""Console script name -> ``module:function``, as in pyproject.toml's ``[project.scripts]`` (a test keeps
the two equal)."""
