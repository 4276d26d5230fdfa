"""kafka-python's rebalance callbacks, passed on to the adapter. kafka-python calls them on the
consumer's IO thread while the polling thread waits in ``poll()``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kafka import ConsumerRebalanceListener, TopicPartition

Partitions = Callable[[Sequence[TopicPartition]], None]


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, revoked: Partitions, assigned: Partitions) -> None:
        self._revoked = revoked
        self._assigned = assigned

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._assigned(assigned)
