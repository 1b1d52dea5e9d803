"""The one error type users see: bad input, reported as a single line naming the field."""


class ConfigError(ValueError):
    """Invalid user input. ``field`` names the flag / YAML key at fault."""

    MAX_LEN = 400  # a message never carries an unbounded value (e.g. an expanded YAML alias)

    def __init__(self, field: str, message: str):
        field, message = ("" if field is None else str(field)), str(message)
        if len(field) > 120:
            field = field[:117] + "..."
        if len(message) > self.MAX_LEN:
            message = message[:self.MAX_LEN - 3] + "..."
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)
