"""Errors meant for the user: the CLI prints their message alone, without a traceback."""


class BigvolError(Exception):
    """Base class of errors caused by the user's input, data or configuration."""


class InputError(BigvolError, ValueError):
    """Bad input data: wrong dtype, mismatched shapes, empty or corrupt files, ..."""


class ConfigError(BigvolError, ValueError):
    """A configuration key or value that is not allowed; the message names the key."""
