"""One exception type for bad input, so the CLI can print it as a single line.

Every user-facing check raises ``PvsError`` with a message that names the bad value
and what is allowed; ``pvs.cli`` prints ``error: <message>`` and exits with status 2.
"""


class PvsError(ValueError):
    """A problem with the user's input or environment, explained in one line."""


def check(condition: bool, message: str) -> None:
    """Raise ``PvsError(message)`` unless ``condition`` holds."""
    if not condition:
        raise PvsError(message)
