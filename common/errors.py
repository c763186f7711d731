"""One error hierarchy for the whole service.

The split that matters to a running process: a :class:`TransientError` (a
connection dropped, a server is restarting, OpenSearch is overloaded) means
"back off, reconnect, resume from durable state"; a :class:`FatalError` means
"this will not get better by retrying: exit non-zero so the supervisor and the
operator see it". Configuration errors are handled before either, with exit 2
(see common.config).
"""

from __future__ import annotations

__all__ = ["FatalError", "SearchsyncError", "TransientError"]


class SearchsyncError(Exception):
    """Base of every error searchsync raises on purpose."""


class TransientError(SearchsyncError):
    """Retry after a backoff, from the last durable state (checkpoint, pending entries)."""


class FatalError(SearchsyncError):
    """Stop the process: retrying cannot help (e.g. the view does not exist)."""
