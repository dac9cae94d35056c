"""The one error the commands report: a single `error:` line and exit code 1, no traceback."""


class CliError(Exception):
    """A failure to report in one line, without a traceback."""
