"""Service levels: how soon a notice must be recorded and answered, globally and per country.

The global deadlines are settings (``record_within_s``, ``answer_within_s``); per-country
overrides come from the TOML file named by ``policy_file``::

    [countries.FR]
    record_within_s = 300

    [countries.TH]
    answer_within_s = 21600
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from notice_bus.errors import ConfigError
from notice_bus.runtime.settings import Settings, read_toml


@dataclass(frozen=True, slots=True)
class Deadlines:
    record_within_s: float
    answer_within_s: float


@dataclass(frozen=True, slots=True)
class Policy:
    default: Deadlines
    countries: dict[str, Deadlines] = field(default_factory=dict)

    def of(self, country: str) -> Deadlines:
        return self.countries.get(country, self.default)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        default = Deadlines(settings.record_within_s, settings.answer_within_s)
        if not settings.policy_file:
            return cls(default)
        path = Path(settings.policy_file)
        data = read_toml(path, "policy file")
        countries = {}
        for cc, values in data.get("countries", {}).items():
            unknown = set(values) - {"record_within_s", "answer_within_s"}
            if unknown:
                raise ConfigError(f"policy file {path}: [countries.{cc}] has unknown {unknown}")
            countries[cc] = Deadlines(
                float(values.get("record_within_s", default.record_within_s)),
                float(values.get("answer_within_s", default.answer_within_s)),
            )
        return cls(default, countries)
