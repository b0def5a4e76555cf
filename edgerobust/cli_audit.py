"""CLI commands: cli_audit (placeholder module, filled in by its stage)."""


def register(app) -> None:
    pass
