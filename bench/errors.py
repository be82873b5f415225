"""The one exception for bad input: the CLI prints its message on one line and exits with status 2."""


class UserError(Exception):
    """Bad input from the user (config, flags, data files). The message names the bad value and what is allowed."""

    exit_status = 2

    def __init__(self, message: str) -> None:
        # One line on stderr, whatever the underlying error looked like.
        super().__init__(" ".join(str(message).split()))


class CannotWrite(UserError):
    """aebench's output (the result store, a report) could not be written while a run measured: a full disk, an I/O
    error, a read-only file. Not bad input, so its own exit status. Every cell stored before stays; ``--resume`` runs
    the rest, and ``aebench report`` writes a report later."""

    exit_status = 3
