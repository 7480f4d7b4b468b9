"""Errors shared across Hotline's modules."""


class CommandError(Exception):
    """An operation failed for a reason the user can act on; the CLI prints it without a traceback."""
