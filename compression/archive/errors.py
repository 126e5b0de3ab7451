"""The one error every archive rule raises: a ValueError, so the worker reports it as the job's invalid input."""


class InvalidUpload(ValueError):
    """The file is not what it claims to be; the message names the offending entry and says what to upload instead."""
