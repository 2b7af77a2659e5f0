"""The one error type users see: a single line naming the fix, exit code 2."""


class UserError(Exception):
    """Bad input from the user (unknown name, bad value, missing file, corrupt store).

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """

    exit_code = 2
