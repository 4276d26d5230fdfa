"""Realistic made-up red notices for demos, tests and benchmarks.

Names come in several scripts, birth dates are sometimes partial, and a notice may rest on
several warrants, as in INTERPOL's real corpus. Seeded, so a run can be repeated.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from notice_bus.wire.model import ArrestWarrant, Person
from notice_bus.wire.validation import Draft

# (family names, forenames, country codes that use the script)
_NAMES: list[tuple[list[str], list[str], list[str]]] = [
    (
        ["Martin", "Bernard", "Dubois", "Moreau", "Laurent"],
        ["Jean", "Camille", "Lucas", "Chloé", "Hugo"],
        ["FR", "BE"],
    ),
    (
        ["Müller", "Schmidt", "Schneider", "Fischer", "Weber"],
        ["Jürgen", "Anna", "Lukas", "Sophie", "Maximilian"],
        ["DE", "AT"],
    ),
    (
        ["García", "Fernández", "González", "Rodríguez", "López"],
        ["José", "María", "Javier", "Lucía", "Alejandro"],
        ["ES", "AR", "MX"],
    ),
    (
        ["Иванов", "Смирнов", "Кузнецов", "Попова", "Соколов"],
        ["Алексей", "Мария", "Дмитрий", "Ольга", "Сергей"],
        ["RU", "UA"],
    ),
    (
        ["الحسن", "العلي", "الزهراني", "منصور", "حداد"],
        ["محمد", "فاطمة", "أحمد", "ليلى", "يوسف"],
        ["EG", "JO", "MA"],
    ),
    (
        ["สมบูรณ์", "ศรีสุข", "วงศ์ใหญ่", "ทองดี", "แก้วมณี"],
        ["สมชาย", "สมหญิง", "ประยุทธ", "วิไล", "อนันต์"],
        ["TH"],
    ),
    (["王", "李", "张", "刘", "陈"], ["伟", "芳", "娜", "敏", "静"], ["CN"]),
    (
        ["Santoso", "Wijaya", "Kusuma", "Hidayat", "Saputra"],
        ["Budi", "Siti", "Agus", "Dewi", "Rizky"],
        ["ID"],
    ),
    (
        ["Silva", "Santos", "Oliveira", "Souza", "Pereira"],
        ["João", "Ana", "Pedro", "Beatriz", "Rafael"],
        ["BR", "PT"],
    ),
    (
        ["Kowalski", "Nowak", "Wiśniewski", "Wójcik", "Kamińska"],
        ["Piotr", "Katarzyna", "Tomasz", "Agnieszka", "Paweł"],
        ["PL"],
    ),
]
_CHARGES = [
    ("Murder", None),
    ("Drug trafficking", None),
    ("Armed robbery", None),
    ("Trafficking in human beings", None),
    ("Money laundering", None),
    ("Fraude en bande organisée", "Organised fraud"),
    ("Tráfico de drogas", "Drug trafficking"),
    ("Мошенничество в особо крупном размере", "Large-scale fraud"),
    ("Participation in a criminal organisation", None),
]
_EYES = ["BRO", "BLU", "GRE", "BLA", "HAZ"]
_HAIR = ["BLA", "BRO", "BLO", "GRY", "RED"]
_LANGS = {
    "FR": "FRE",
    "BE": "FRE",
    "DE": "GER",
    "AT": "GER",
    "ES": "SPA",
    "AR": "SPA",
    "MX": "SPA",
    "RU": "RUS",
    "UA": "UKR",
    "EG": "ARA",
    "JO": "ARA",
    "MA": "ARA",
    "TH": "THA",
    "CN": "CHI",
    "ID": "IND",
    "BR": "POR",
    "PT": "POR",
    "PL": "POL",
}


def make_drafts(
    count: int,
    *,
    seed: int = 2016,
    year: int = 2026,
    first_number: int = 10000,
    countries: Sequence[str] = (),
    targeted_share: float = 0.3,
) -> list[Draft]:
    """``count`` notices; ``targeted_share`` of them target 1-3 of ``countries`` only."""
    rng = random.Random(seed)
    return [
        _draft(rng, f"{year}/{first_number + i}", countries, targeted_share) for i in range(count)
    ]


def revise(draft: Draft, rng: random.Random) -> Draft:
    """The same notice with something learned since: a new mark, a new warrant, or a weight."""
    p = draft.person
    choice = rng.randrange(3)
    if choice == 0:
        person = _replace(
            p,
            distinguishing_marks=f"Scar on the {rng.choice(['left', 'right'])}"
            f" {rng.choice(['hand', 'cheek', 'forearm'])}",
        )
    elif choice == 1:
        charge, translation = rng.choice(_CHARGES)
        extra = ArrestWarrant(rng.choice(p.nationalities or ("FR",)), charge, translation)
        person = _replace(p, arrest_warrants=(*p.arrest_warrants, extra))
    else:
        person = _replace(p, weight=round(rng.uniform(50, 110), 1))
    return Draft(draft.notice_id, draft.requesting_country, draft.target_countries, person)


def _draft(rng: random.Random, notice_id: str, countries: Sequence[str], share: float) -> Draft:
    family, given, origin = rng.choice(_NAMES)
    nationality = rng.choice(origin)
    year = rng.randint(1950, 2004)
    dob = rng.choice(
        [f"{year}/{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}"] * 3
        + [f"{year}/{rng.randint(1, 12):02d}", str(year)]
    )
    warrants = tuple(
        ArrestWarrant(nationality, *rng.choice(_CHARGES)) for _ in range(rng.choice([1, 1, 2, 3]))
    )
    person = Person(
        name=rng.choice(family),
        forename=rng.choice(given) if rng.random() > 0.05 else None,
        date_of_birth=dob,
        sex_id=rng.choice(["M", "M", "F", "U"]),
        nationalities=(nationality,) if rng.random() > 0.1 else (nationality, rng.choice(origin)),
        country_of_birth_id=nationality,
        place_of_birth=None if rng.random() < 0.3 else f"{nationality} city {rng.randint(1, 40)}",
        height=round(rng.uniform(1.50, 1.95), 2) if rng.random() > 0.2 else None,
        weight=float(rng.randint(50, 110)) if rng.random() > 0.3 else None,
        eyes_colors_id=(rng.choice(_EYES),),
        hairs_id=(rng.choice(_HAIR),),
        languages_spoken_ids=(_LANGS[nationality],),
        arrest_warrants=warrants,
        images=tuple(str(rng.randint(10**7, 10**8)) for _ in range(rng.randint(0, 3))),
    )
    targets: tuple[str, ...] = ()
    if countries and rng.random() < share:
        targets = tuple(
            sorted(rng.sample(list(countries), k=min(len(countries), rng.randint(1, 3))))
        )
    return Draft(notice_id, nationality, targets, person)


def _replace(p: Person, **changes: object) -> Person:
    from dataclasses import replace

    return replace(p, **changes)  # type: ignore[arg-type]
