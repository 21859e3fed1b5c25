"""The one exception type of the data layer (its own module so every data module can import it)."""


class DataError(ValueError):
    """Bad data input: the message is one line naming the bad value or path and what is expected."""
