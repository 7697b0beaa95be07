"""Sub-commands of tumor synthesis (placeholder until the engine lands)."""


def register(commands, common) -> None:
    """Add this capability's sub-commands."""
