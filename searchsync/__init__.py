"""searchsync: keeps an OpenSearch index in step with a Materialize view through
durable Redis Streams.

The subpackages live in the repository's top-level folders, one per part of the
data path, and are installed under this one name:

- ``searchsync.producer``: SUBSCRIBE, consolidation, stream entries (``searchsync-producer``)
- ``searchsync.consumer``: leases, ``_bulk``, acknowledgements (``searchsync-consumer``)
- ``searchsync.common``: settings, key names, the entry codec, shared by both
- ``searchsync.cli``: the operator's ``searchsync`` command (also ``python -m searchsync``)
"""

__version__ = "0.1.0"
