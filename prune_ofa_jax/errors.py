"""The errors a user can cause and fix, as one-line messages (a leaf: imports nothing of ours).

Command lines print them as one `error: ...` line and exit 2 (prune_ofa_jax/cli.py); anything
else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input from the user (a flag, a config value, a file): the message says what and
    how to fix it, in one line."""


class ConfigError(UserError):
    """An invalid config value; the message starts with the key (`config.train.steps: ...`)."""


class UsageError(UserError):
    """A bad command-line flag or argument, found before any heavy work starts."""
