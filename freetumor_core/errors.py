"""Errors that the command line turns into exit codes.

``InputError`` means the user's input is wrong (exit code 2); anything else is a bug (exit 1).
"""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad input: a missing, corrupt or unsuitable file, or an impossible request.

    The message always names the offending file (when there is one) and the problem.
    """

    def __init__(self, problem: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
