"""Errors that the CLI turns into a clear message and a non-zero exit (2)."""


class LmadaptError(Exception):
    """A user-facing error: bad recipe, bad data, unknown source. The message is shown as is."""


class RecipeError(LmadaptError):
    """The recipe (or a CLI override) is invalid; the message lists every problem."""


class DataError(LmadaptError):
    """A data file is malformed; the message names the file, line and field."""


class SourceError(LmadaptError):
    """A model or dataset could not be resolved or fetched."""
