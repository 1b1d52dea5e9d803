"""The one error type users see: bad input, reported as a single line naming the field."""


class ConfigError(ValueError):
    """Invalid user input. ``field`` names the flag / YAML key at fault."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)
