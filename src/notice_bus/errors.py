"""The exception hierarchy.

Every error notice-bus raises is a :class:`NoticeBusError`. Whether an operation that failed may
be tried again is a property of the exception's class (``retriable``), so a retry policy asks one
question of an exception and nothing else.
"""

from __future__ import annotations

from typing import ClassVar


class NoticeBusError(Exception):
    """Root of every error raised by notice-bus."""

    retriable: ClassVar[bool] = False


class ConfigError(NoticeBusError):
    """The configuration is missing, malformed or points at something that does not exist."""


class InvalidNotice(NoticeBusError):
    """A notice does not satisfy the contract; nothing has been sent or written for it.

    ``source`` names where it came from (a file, a topic partition and offset), ``notice_id`` the
    notice when it is known, and ``field`` the offending field when there is one.
    """

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        notice_id: str | None = None,
        source: str | None = None,
    ) -> None:
        self.reason = reason
        self.field = field
        self.notice_id = notice_id
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [p for p in (self.source, self.notice_id and f"notice {self.notice_id}") if p]
        if self.field:
            parts.append(f"field {self.field!r}")
        where = ": ".join(parts)
        return f"{where}: {self.reason}" if where else self.reason

    def located(self, source: str) -> InvalidNotice:
        """The same error, told where it was found."""
        return InvalidNotice(self.reason, field=self.field, notice_id=self.notice_id, source=source)


class HQStateError(NoticeBusError):
    """HQ was asked for something its records forbid: cancelling an unknown notice, updating a
    cancelled one."""


class AlreadyCancelled(HQStateError):
    """The notice to cancel is cancelled already. Not a failure for a caller that only needs
    it cancelled (a retried ``cancel``): nothing new was written, and what the first cancel
    left in HQ's outbox has been sent."""


class NotReviewable(NoticeBusError):
    """A reviewer's decision on a request that cannot take one."""


class UnknownRequest(NotReviewable):
    """No request with that id reached HQ."""


class AlreadyDecided(NotReviewable):
    """The request was decided already (approved, refused, or invalid): a decision is final."""


class InvalidMessage(NoticeBusError):
    """A Kafka record that cannot be processed, ever: undecodable bytes, an unknown schema,
    invalid fields. It is routed to the dead-letter topic, never retried."""

    def __init__(
        self, reason: str, *, topic: str, partition: int, offset: int, key: str | None = None
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        super().__init__(f"{topic}[{partition}]@{offset}: {reason}")


class SchemaError(NoticeBusError):
    """A payload does not match its Avro schema, or names a schema nobody registered."""


class TransientError(NoticeBusError):
    """Something we depend on is unavailable for now; the same call may succeed later."""

    retriable = True


class BrokerUnavailable(TransientError):
    """The Kafka cluster did not answer or refused the request for a passing reason."""


class WriteConflict(TransientError):
    """Another HQ process wrote the same notices at the same moment, again and again; nothing
    of this call was written, and the call may be made again."""


class LocalSystemUnavailable(TransientError):
    """The country's local information system (database, API, file share) is unavailable."""


class LocalSystemRejected(NoticeBusError):
    """The local information system refused a notice for good (a constraint, a 4xx answer)."""


class BrokerSetupError(NoticeBusError):
    """The local Kafka broker could not be provisioned or started."""


class OutputError(NoticeBusError):
    """A file or folder notice-bus was asked to write (a report, a broker's data) could not be
    created."""


class SignatureInvalid(NoticeBusError):
    """A record's signature or MAC is missing, malformed, made with an unknown, retired or
    revoked key, or does not match: the record is not trusted."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class KeyringInvalid(ConfigError):
    """The keyring file or record is malformed or not signed by the configured root key."""


class SecurityError(NoticeBusError):
    """The cluster refused who we are or what we asked; never retried, never a time-out."""


class AuthenticationFailed(SecurityError):
    """The Kafka cluster refused this client's identity (a wrong password, an unknown or
    revoked user, a certificate it does not trust). Trying again with the same credentials
    cannot work: what must change is the configuration."""


class AccessDenied(SecurityError):
    """The Kafka cluster knows this client but its ACLs forbid what was asked (reading a topic,
    writing one, joining a group). ``principal`` and ``resource`` name who and what."""

    def __init__(self, reason: str, *, principal: str = "", resource: str = "") -> None:
        self.principal = principal
        self.resource = resource
        super().__init__(reason)
