"""The one error type a person is meant to read: bad input, said in one line."""


class ConfigError(ValueError):
    """A config, data, model or command-line problem, as one line that names the key or file.

    The CLI prints it as `qlora-sweep: error: ...` and exits with code 2; raised before anything
    is written or started wherever that can be known in advance.
    """
