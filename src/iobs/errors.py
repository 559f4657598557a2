"""Errors that users can act on: each carries one line that names what is wrong and how to fix it."""


class IobsError(Exception):
    """A failure caused by input (config, paths, models, data) rather than by a bug.

    The message is shown to the user as a single line, so it must name the offending thing and the fix.
    """


class ConfigError(IobsError):
    """The configuration does not match the schema or is inconsistent."""


class DataError(IobsError):
    """A dataset, file or model that the configuration points at is missing or malformed."""
