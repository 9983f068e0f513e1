"""User-facing errors: each names the offending file, key or class and the fix.

Scripts print these as one message (no traceback) and exit with status 2.
"""


class PromptLearningError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""


class ConfigurationError(PromptLearningError):
    """A configuration value is missing, unknown or incompatible with another."""


class RunDirectoryInUse(ConfigurationError):
    """The run directory holds a checkpoint of other settings; nothing was run, and nothing is written there."""


class BackboneWeightsError(PromptLearningError):
    """Pretrained weights could not be found, downloaded or read."""


class DataError(PromptLearningError):
    """A dataset's files are missing, empty or unreadable."""
