"""CLI commands: cli_attack (placeholder module, filled in by its stage)."""


def register(app) -> None:
    pass
