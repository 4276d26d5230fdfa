"""HQ's screening of a bureau's request for a red notice: explainable findings for a reviewer.

Screening looks for three things: a request too incomplete to act on (no warrant, a warrant
without charge or issuing country, nothing but a family name to identify the person); signs
that the case may be of a predominantly political, military, religious or racial character,
which Article 3 of INTERPOL's Constitution forbids (words in the charges and in the request's
facts); and a stated status, such as refugee, that calls for a review of its own.

It decides nothing. A finding is a pointer for a human reviewer: the rule, the field, the text
that matched and why the rule exists. No finding does not mean that a request complies: a rule
set is never complete, words miss paraphrases and languages it lacks, and a finding may be a
false alarm (a charge quoted in the facts to be denied). Article 3 and status rules are data
(``article3_rules.toml`` beside this module, plus the user's files in the same format);
completeness rules check structure and are code.

Matching is on NFKC-normalised, case-folded text with combining marks (Arabic short vowels,
the dot casefold leaves on Turkish İ) dropped and a few letter variants merged (Arabic alefs,
Russian ё, Turkish dotless i), so patterns are written in that form; their non-ASCII letters are
folded the same way on loading.
"""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notice_bus.errors import ConfigError
from notice_bus.wire.model import Person
from notice_bus.wire.validation import Draft

SHIPPED = Path(__file__).with_name("article3_rules.toml")
CATEGORIES = frozenset({"political", "military", "religious", "racial", "status"})
#: What a rule's ``fields`` may name: every warrant's charge and charge translation, the
#: request's free-text facts, the person's stated status.
FIELDS = frozenset({"charge", "facts", "person_status"})
_DEFAULT_FIELDS = {"status": frozenset({"person_status"})}
_RULE_KEYS = frozenset({"id", "category", "explanation", "fields", "patterns", "disabled"})
_TEXT_LIMIT = 200
_LANG = re.compile(r"[a-z]{2,3}\Z")
# A match must start a word, so that a stem is not found inside another word. Arabic attaches
# conjunctions, prepositions and the article to the word, so they may come before it.
# Scripts written without spaces have no word boundary to ask for.
_STARTS = {"ar": r"(?<!\w)[وف]?(?:[بك]?ال|لل|[بكل])?"}
_NO_SPACES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo"})
_WORD_START = r"(?<!\w)"
_WORD_REST = re.compile(r"\w*")
_MERGE = {"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ё": "е", "ı": "i", "’": "'", "ʼ": "'"}

_IDENTIFIERS = "forename, date_of_birth, nationalities, images or distinguishing_marks"
_COMPLETENESS = {
    "COMPLETE-WARRANT": "A red notice rests on at least one arrest warrant",
    "COMPLETE-WARRANT-COUNTRY": "A warrant must name the country that issued it",
    "COMPLETE-WARRANT-CHARGE": "A warrant must state the charge, so that Article 3 can be assessed",
    "COMPLETE-NAME": "The person's family name is missing",
    "COMPLETE-IDENTIFIERS": "The family name alone does not identify a person: bureaus need a"
    " forename, date of birth, nationality, photograph or distinguishing marks to act",
}


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: str
    category: str  # "completeness" | "political" | "military" | "religious" | "racial" | "status"
    field: str
    text: str  # what triggered it, at most 200 characters
    explanation: str

    def to_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in _FINDING_KEYS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        """From :meth:`to_dict`'s form; raises KeyError when a key is missing."""
        return cls(*(str(d[name]) for name in _FINDING_KEYS))


_FINDING_KEYS = ("rule_id", "category", "field", "text", "explanation")


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    category: str
    explanation: str
    fields: frozenset[str]
    patterns: tuple[tuple[str, re.Pattern[str]], ...]  # (language, compiled pattern)

    def search(self, nfkc: str, folded: str, where: list[int]) -> str | None:
        """The earliest match in the text, widened to its word's end, or None."""
        best: tuple[int, int, str] | None = None
        for lang, pattern in self.patterns:
            m = pattern.search(folded)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), m.end(), lang)
        if best is None:
            return None
        start, end, lang = best
        if lang not in _NO_SPACES:  # a stem's match shows the whole word: "дезертирство"
            rest = _WORD_REST.match(folded, end)
            end = rest.end() if rest else end
        if end <= start:  # a pattern that matched nothing but a position
            return _clip(nfkc)
        stop = where[end - 1] + 1
        while stop < len(nfkc) and unicodedata.category(nfkc[stop]) == "Mn":
            stop += 1  # the last letter's marks, dropped from the folded text
        return _clip(nfkc[where[start] : stop])


class Rules:
    """A rule set, parsed and compiled once."""

    def __init__(self, rules: Sequence[_Rule] = ()) -> None:
        self._rules = {r.id: r for r in rules}

    @classmethod
    def load(cls, extra: Sequence[str | Path] = ()) -> Rules:
        """The rules shipped with notice-bus (article3_rules.toml beside this module) plus those
        of each extra TOML file (same format; a rule with an id already loaded replaces it, so
        users can also narrow a shipped rule, and ``disabled = true`` removes it). A bad file
        raises ConfigError naming the file and the problem."""
        if isinstance(extra, str):  # one path, not a sequence of one-letter paths
            extra = (extra,)
        rules: dict[str, _Rule] = {}
        for path in (SHIPPED, *(Path(p) for p in extra)):
            for rule_id, rule in _parse_file(path):
                if rule is None:
                    rules.pop(rule_id, None)
                else:
                    rules[rule_id] = rule
        return cls(list(rules.values()))

    def screen(
        self, draft: Draft, *, facts: str | None = None, person_status: str | None = None
    ) -> list[Finding]:
        """Every finding, in a stable order (completeness first, then by field then rule id);
        no duplicate (rule_id, field) pair."""
        found = {(f.rule_id, f.field): f for f in _completeness(draft.person)}
        for kind, field, value in _texts(draft.person, facts, person_status):
            folded = None  # folded once per field, and only if a rule looks at it
            for rule in self._rules.values():
                if kind not in rule.fields:
                    continue
                folded = folded or _fold(value)
                text = rule.search(*folded)
                if text is not None:
                    found.setdefault(
                        (rule.id, field),
                        Finding(rule.id, rule.category, field, text, rule.explanation),
                    )
        return sorted(
            found.values(),
            key=lambda f: (f.category != "completeness", _field_key(f.field), f.rule_id),
        )

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._rules


def _completeness(p: Person) -> Iterator[Finding]:
    def finding(rule_id: str, field: str, text: str = "(empty)") -> Finding:
        return Finding(rule_id, "completeness", field, _clip(text), _COMPLETENESS[rule_id])

    # Validation refuses most of these, but screening does not assume it ran.
    if not p.arrest_warrants:
        yield finding("COMPLETE-WARRANT", "arrest_warrants", "no arrest warrant")
    for i, w in enumerate(p.arrest_warrants):
        if not w.issuing_country_id.strip():
            yield finding("COMPLETE-WARRANT-COUNTRY", f"arrest_warrants[{i}].issuing_country_id")
        if not w.charge.strip():
            yield finding("COMPLETE-WARRANT-CHARGE", f"arrest_warrants[{i}].charge")
    if not p.name.strip():
        yield finding("COMPLETE-NAME", "name")
    texts = (p.forename, p.date_of_birth, p.distinguishing_marks)
    # A list that is None (unknown) identifies no more than an empty one.
    if not any(t and t.strip() for t in texts) and not (p.nationalities or p.images):
        yield finding("COMPLETE-IDENTIFIERS", "person", f"{p.name} (no {_IDENTIFIERS})")


def _texts(p: Person, facts: str | None, status: str | None) -> Iterator[tuple[str, str, str]]:
    """(kind, field, text) of every free text a rule may look at."""
    for i, w in enumerate(p.arrest_warrants):
        yield "charge", f"arrest_warrants[{i}].charge", w.charge
        if w.charge_translation:
            yield "charge", f"arrest_warrants[{i}].charge_translation", w.charge_translation
    if facts:
        yield "facts", "facts", facts
    if status:
        yield "person_status", "person_status", status


def _parse_file(path: Path) -> Iterator[tuple[str, _Rule | None]]:
    """(id, rule) of each rule of a file, (id, None) for a rule it disables."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read screening rules: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from exc
    if set(data) - {"rule"} or not isinstance(data.get("rule", []), list):
        raise ConfigError(f"{path}: a rules file holds only [[rule]] tables")
    seen: set[str] = set()
    for n, raw in enumerate(data.get("rule", []), start=1):
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(rule_id, str) or not rule_id.strip():
            raise ConfigError(f"{path}: rule #{n} has no id")
        if rule_id in seen:  # overriding is across files; twice in one file is a slip
            raise ConfigError(f"{path}: rule {rule_id!r} is defined twice")
        seen.add(rule_id)
        assert isinstance(raw, dict)
        if not isinstance(raw.get("disabled", False), bool):
            raise ConfigError(f"{path}: rule {rule_id!r}: disabled must be true or false")
        if raw.get("disabled"):
            yield rule_id, None
        else:
            yield rule_id, _parse_rule(raw, f"{path}: rule {rule_id!r}")


def _parse_rule(raw: dict[str, Any], where: str) -> _Rule:
    unknown = set(raw) - _RULE_KEYS
    if unknown:  # a misspelt key would otherwise be ignored without a word
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    category = raw.get("category")
    if category not in CATEGORIES:
        raise ConfigError(
            f"{where}: category must be one of {sorted(CATEGORIES)}, got {category!r}"
        )
    explanation = raw.get("explanation")
    if not isinstance(explanation, str) or not explanation.strip():
        raise ConfigError(f"{where}: no explanation")
    fields = raw.get("fields", sorted(_DEFAULT_FIELDS.get(category, {"charge", "facts"})))
    if not isinstance(fields, list) or not fields or not set(fields) <= FIELDS:
        raise ConfigError(f"{where}: fields must be a non-empty list of {sorted(FIELDS)}")
    patterns = raw.get("patterns")
    if not isinstance(patterns, dict) or not patterns:
        raise ConfigError(f"{where}: no patterns")
    compiled: list[tuple[str, re.Pattern[str]]] = []
    for lang, sources in patterns.items():
        if not _LANG.match(lang):
            raise ConfigError(f"{where}: {lang!r} is not a language code like 'en'")
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ConfigError(f"{where}: patterns.{lang} must be a list of strings")
        compiled += [(lang, _compile(source, lang, where)) for source in sources]
    if not compiled:
        raise ConfigError(f"{where}: no patterns")
    return _Rule(raw["id"], category, explanation.strip(), frozenset(fields), tuple(compiled))


def _compile(source: str, lang: str, where: str) -> re.Pattern[str]:
    # ASCII is left alone (escapes like \W must keep their case); IGNORECASE covers it.
    folded = "".join(
        c if c.isascii() else _fold_char(c) for c in unicodedata.normalize("NFKC", source)
    )
    start = "" if lang in _NO_SPACES else _STARTS.get(lang, _WORD_START)
    try:
        if re.compile(folded).fullmatch(""):  # it would flag every text
            raise ConfigError(f"{where}: pattern {source!r} ({lang}) matches the empty text")
        return re.compile(f"{start}(?:{folded})", re.IGNORECASE)
    except re.error as exc:
        reason = f"pattern {source!r} ({lang}) is not a valid regex: {exc}"
        raise ConfigError(f"{where}: {reason}") from exc


@functools.lru_cache(maxsize=1 << 16)  # bounded: the text comes from outside
def _fold_char(ch: str) -> str:
    return "".join(_MERGE.get(c, c) for c in ch.casefold() if unicodedata.category(c) != "Mn")


def _fold(text: str) -> tuple[str, str, list[int]]:
    """The text in NFKC, folded for matching, and where each folded character comes from in
    the NFKC text (case folding may turn one character into two, marks into none)."""
    nfkc = unicodedata.normalize("NFKC", text)
    parts: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(nfkc):
        folded = _fold_char(ch)
        parts.append(folded)
        where.extend([i] * len(folded))
    return nfkc, "".join(parts), where


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def _field_key(field: str) -> tuple[tuple[str, int], ...]:
    """``arrest_warrants[2]`` before ``arrest_warrants[10]``."""
    parts = re.split(r"(\d+)", field)
    return tuple(
        (parts[i], int(parts[i + 1]) if i + 1 < len(parts) else -1) for i in range(0, len(parts), 2)
    )
