"""The exit codes of the ``notice-bus`` command, after BSD sysexits(3).

0 done (a cancel of a notice cancelled already included), 2 a review decision asked of a
request that is unknown or decided already, 64 usage, 65 bad input data (an
invalid notice or file, a change HQ's records refuse), 69 the broker or a database unavailable,
70 internal error, 73 an output that cannot be created, 75 a temporary failure worth retrying,
77 refused by the cluster's security (credentials, ACLs), 78 configuration, 130 interrupted.
README's table lists them for users.
"""

from __future__ import annotations

from notice_bus.errors import (
    BrokerSetupError,
    BrokerUnavailable,
    ConfigError,
    HQStateError,
    InvalidMessage,
    InvalidNotice,
    LocalSystemRejected,
    LocalSystemUnavailable,
    NoticeBusError,
    NotReviewable,
    OutputError,
    SchemaError,
    SecurityError,
    TransientError,
)

EX_NOT_REVIEWABLE = 2
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_NOPERM = 77
EX_TEMPFAIL = 75
EX_CONFIG = 78
#: The exit code of each error class; an error takes that of its nearest class here.
EXIT_CODES: dict[type[BaseException], int] = {
    NoticeBusError: EX_SOFTWARE,  # raised without a class that says more: ours to fix
    InvalidNotice: EX_DATAERR,
    InvalidMessage: EX_DATAERR,
    SchemaError: EX_DATAERR,
    LocalSystemRejected: EX_DATAERR,
    # The request names a notice HQ's records do not allow it for: what must change is the
    # request's data, and trying it again as it is can never work.
    HQStateError: EX_DATAERR,
    ConfigError: EX_CONFIG,
    TransientError: EX_TEMPFAIL,  # e.g. another HQ writing the same notices again and again
    BrokerUnavailable: EX_UNAVAILABLE,
    LocalSystemUnavailable: EX_UNAVAILABLE,  # HQ's or the tracker's database too
    BrokerSetupError: EX_UNAVAILABLE,  # no Java, no Maven: a support program is missing
    OutputError: EX_CANTCREAT,
    NotReviewable: EX_NOT_REVIEWABLE,
    # Refused credentials or ACLs: neither a bad notice nor worth retrying as it is.
    SecurityError: EX_NOPERM,
}


def exit_code(exc: BaseException) -> int:
    """The exit code for ``exc``, from :data:`EXIT_CODES`; 70 for anything unforeseen."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EX_SOFTWARE


EX_INTERRUPTED = 130
