"""Errors a user can cause, kept apart from bugs so the CLI can print one line and exit 2."""


class UserError(Exception):
    """A problem in what the user asked for; the message names the culprit and a fix."""


class UnknownEnvError(UserError):
    """The environment id is not registered with gymnasium."""


class UnsupportedSpaceError(UserError):
    """The environment's observation or action space is one the pipeline cannot serve."""
