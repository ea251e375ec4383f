"""The one base class of errors that the command line reports as a single clear line."""


class BedsideError(Exception):
    """An expected failure caused by input or environment, not by a bug."""
