"""Consumer group names, which the adapter joins and the tracker looks up."""

from __future__ import annotations

from notice_bus.runtime.settings import Settings

#: The hub name when none is given. It does not depend on the countries: a hub that gains a
#: country keeps its group, and its offsets, instead of re-reading every topic from the start.
DEFAULT_HUB = "default"


def group_id(settings: Settings, country: str) -> str:
    """The group of an adapter that serves ``country`` alone."""
    return f"{settings.topic_prefix}notice-bus.{country}"


def hub_group_id(settings: Settings, hub: str) -> str:
    """The group of the hub named ``hub`` (several countries in one adapter)."""
    return f"{settings.topic_prefix}notice-bus.hub.{hub}"


def review_group_id(settings: Settings) -> str:
    """The group of HQ's review service, which reads every country's requests."""
    return f"{settings.topic_prefix}notice-bus.review"
