"""User-facing errors: each names the offending file, key or class and the fix.

Scripts print these as one message (no traceback) and exit with status 2.
"""


class PromptLearningError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""


class ConfigurationError(PromptLearningError):
    """A configuration value is missing, unknown or incompatible with another."""


class RunDirectoryInUse(ConfigurationError):
    """The run directory belongs to another run (another process holds its lock, or its checkpoint is of
    other settings); nothing was run, and nothing is written there."""


class StorageError(PromptLearningError):
    """A file cannot be stored: a read-only or full disk, no permission, a file where a directory belongs.
    The message names the path and the fix (the setting that moves it); ``os_error`` is the system's error."""

    os_error: OSError | None = None


class BackboneWeightsError(PromptLearningError):
    """Pretrained weights could not be found, downloaded or read."""


class DataError(PromptLearningError):
    """A dataset's files are missing, empty or unreadable."""


class FormatError(DataError, ConfigurationError):
    """A file (or a class list given to the API) does not match its format: the message names the file, the
    entry (line, index or key), what was expected and the fix. Both a DataError and a ConfigurationError, so
    that code catching either for a dataset or an export file catches it (``prompt_learning/formats.py``)."""
