"""The error that first-party plugins raise for pretrained files."""


class CheckpointError(ValueError):
    """A model folder, weight file or centroid file that is missing, unreadable or does not match the recipe.

    It derives from ``ValueError`` so that recipe composition reports it with the
    component's recipe key.
    """
