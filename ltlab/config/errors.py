"""The one exception bad user input raises, at the bottom of every layer."""


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the bad value and what is allowed."""
