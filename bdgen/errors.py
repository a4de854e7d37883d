"""The one exception type users see.

Anything that is the user's input being wrong (a missing file, an unknown method name, a
corrupt checkpoint, a bad config) raises :class:`BdgenError` with a one-line message that
names the problem. The CLI prints it as ``error: <message>`` and exits with status 2.
"""


class BdgenError(Exception):
    """A user-facing error with a one-line message."""
