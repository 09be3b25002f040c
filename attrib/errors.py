"""Errors that reach the user as one line and exit code 2 (bad usage or bad input)."""


class AttribError(Exception):
    """Bad input or bad usage: the message names the problem and the fix.

    The CLI prints `error: <message>` on stderr and exits with code 2, without a traceback.
    """
