"""Errors meant for the user: the CLI prints their message alone, without a traceback.

One class per kind of mistake:

- :class:`InputError`: the data (an array, a file) is not what the function needs,
- :class:`ConfigError`: a parameter or config value is not allowed (the message names it),
- :class:`StoreError`: a run store that is missing, incomplete or not written by bigvol.
"""


class BigvolError(Exception):
    """Base class of errors caused by the user's input, data or configuration."""


class InputError(BigvolError, ValueError):
    """Bad input data: wrong dtype, mismatched shapes, empty or corrupt files, ..."""


class ConfigError(BigvolError, ValueError):
    """A parameter or configuration value that is not allowed; the message names it."""


class StoreError(BigvolError, RuntimeError):
    """A run store that is missing, incomplete or not written by bigvol."""
