"""CLI commands: compress, demo, zoo."""


def register(app) -> None:
    pass
