"""The errors the playground reports to people: each message says what is wrong and what to do.

Every front end (the page, the command line, the API) catches these and shows the message as
it is, never a traceback.
"""


class SettingsError(ValueError):
    """A setting or prompt that cannot be used; the message is meant for people."""


class EditInputError(SettingsError):
    """A picture or mask that cannot be used; the message is meant for people."""


class ModelNotFoundError(RuntimeError):
    """A model folder is missing or incomplete (the message says which part, and how to fix it)."""


class ModelLoadError(RuntimeError):
    """A model that cannot be used; the message names it and says why, for people."""
