"""Exceptions that the command line turns into one-line messages."""


class DiffuSpeechError(Exception):
    """Base of every error whose message is meant for the user."""


class PluginError(DiffuSpeechError):
    """A plugin cannot be found, imported or type-checked."""


class RecipeError(DiffuSpeechError):
    """A recipe is invalid: the message names the key, the value and the choices."""


class DataError(DiffuSpeechError):
    """A manifest row or file is invalid: the message names the file and row."""
