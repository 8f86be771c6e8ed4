"""The one exception a user sees as a message rather than a traceback."""


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one line and says what to do."""
