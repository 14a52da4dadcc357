"""The one exception type that maskdiff raises for bad input; the CLI prints it as one line."""


class MaskdiffError(ValueError):
    """A user-facing error: the message says what was wrong and what is valid."""
