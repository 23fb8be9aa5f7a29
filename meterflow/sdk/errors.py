"""What the SDK raises: invalid events and spool failures."""

from __future__ import annotations


class InvalidEvent(ValueError):
    """track() was given something the pipeline would dead-letter or cannot encode."""


class SpoolError(RuntimeError):
    pass


class SpoolFull(SpoolError):
    """The spool reached its byte cap: the event was NOT accepted (Kafka unreachable too long?)."""


class SpoolLocked(SpoolError):
    """Another client (this or another process) has the spool directory open."""


class SpoolCorrupt(SpoolError):
    """A record before the spool's tail fails its checksum: refuse to guess what was lost."""


class SpoolClosed(SpoolError):
    pass
