"""Sub-commands of the Visual Turing Test (placeholder until the study code lands)."""


def register(commands, common) -> None:
    """Add this capability's sub-commands."""
