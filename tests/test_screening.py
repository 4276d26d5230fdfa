"""HQ's screening of requests: completeness, Article 3 indicators, refugee status, rule files."""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest

from notice_bus.errors import ConfigError
from notice_bus.hq.screening import Finding, Rules
from notice_bus.wire.model import ArrestWarrant
from notice_bus.wire.validation import Draft, check_draft
from tests.factories import PERSON, draft, notice_json

SHIPPED_IDS = {
    "A3-HEAD-OF-STATE": "political",
    "A3-SEDITION": "political",
    "A3-TREASON": "political",
    "A3-PROPAGANDA": "political",
    "A3-OPPOSITION": "political",
    "A3-PROTEST": "political",
    "A3-DESERTION": "military",
    "A3-DRAFT-EVASION": "military",
    "A3-INSUBORDINATION": "military",
    "A3-BLASPHEMY": "religious",
    "A3-APOSTASY": "religious",
    "A3-RELIGIOUS-GROUP": "religious",
    "A3-RACE-ETHNICITY": "racial",
    "STATUS-REFUGEE": "status",
}


@pytest.fixture(scope="module")
def rules() -> Rules:
    return Rules.load()


def charged(*charges: str | tuple[str, str]) -> Draft:
    """A complete draft whose warrants have these charges (or (charge, translation) pairs)."""
    warrants = tuple(
        ArrestWarrant("RU", *c) if isinstance(c, tuple) else ArrestWarrant("RU", c) for c in charges
    )
    return draft(arrest_warrants=warrants)


def found(findings: list[Finding]) -> set[tuple[str, str, str]]:
    return {(f.rule_id, f.field, f.text) for f in findings}


def test_the_shipped_rules_load(rules: Rules) -> None:
    assert len(rules) == len(SHIPPED_IDS)
    assert all(rule_id in rules for rule_id in SHIPPED_IDS)


# --- no finding on ordinary crimes -----------------------------------------------------------

ORDINARY = [
    ("en", "Murder", "He shot the victim during an armed robbery and fled abroad."),
    ("en", "Fraud", "Drug trafficking and homicide; the proceeds were laundered."),
    ("fr", "Vol à main armée", "Homicide volontaire et escroquerie au préjudice d'une banque."),
    ("es", "Homicidio", "Estafa y tráfico de drogas; robo con violencia en una joyería."),
    ("ru", "Убийство", "Мошенничество и незаконный оборот наркотиков в особо крупном размере."),
    ("ar", "قتل", "قتل عمد واحتيال والاتجار بالمخدرات وسرقة بالإكراه."),
    ("de", "Totschlag", "Betrug und Raub; er floh ins Ausland."),
    ("pt", "Homicídio", "Roubo à mão armada e tráfico de drogas."),
    ("tr", "Kasten öldürme", "Dolandırıcılık ve uyuşturucu ticareti."),
    ("zh", "故意杀人", "诈骗和贩卖毒品。"),
]


@pytest.mark.parametrize(("lang", "charge", "facts"), ORDINARY, ids=[o[0] for o in ORDINARY])
def test_an_ordinary_crime_gives_no_finding(
    rules: Rules, lang: str, charge: str, facts: str
) -> None:
    assert rules.screen(charged(charge), facts=facts) == []


@pytest.mark.parametrize(
    "text",
    [
        "Tax evasion",  # evasion, but not of military service
        "Уклонение от уплаты налогов",
        "التهرب الضريبي",
        "Escape from prison",
        "الفرار من السجن",  # fleeing, but not the army
        "Desertion of family",  # an ordinary offence in some countries
        "Désertion du domicile familial",
        "Rébellion et violences sur agent",  # French "rébellion": resisting an officer
        "Insulting the president of the football club",
        "Outrage au président du tribunal",
        "ردة فعل عنيفة",  # "a violent reaction", not apostasy
        "اهانة رب العمل",  # insulting the employer, not God
        "الاعتداء على ملك الغير",  # others' property, not the king
        "Industrial espionage",
        "Wirtschaftsspionage",
        "Horse race fixing",
        "The victim, Mr Ahmadi, was shot",  # a surname, not the Ahmadiyya
        "Gülen yüzlü kadın dolandırıldı",  # "smiling", not the movement
        "Participation in a criminal organisation",
        "Money laundering by a politically exposed person",
        "He organised in March 2021 a fraud scheme",
        "Conspiracy to commit consedition",  # a rule's word inside another word
        "6136 sayılı Kanuna muhalefet",  # Turkish: a breach of the firearms law
        "违反党纪",  # breaking party discipline, not "anti-party"
    ],
)
def test_near_misses_give_no_finding(rules: Rules, text: str) -> None:
    assert rules.screen(charged(text), facts=text) == []


# --- Article 3 indicators --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charge", "rule_id", "text"),
    [
        ("Insulting the President", "A3-HEAD-OF-STATE", "Insulting the President"),
        ("Lèse-majesté", "A3-HEAD-OF-STATE", "Lèse-majesté"),
        ("Offense au chef de l’État", "A3-HEAD-OF-STATE", "Offense au chef de l’État"),
        ("Injurias al Rey", "A3-HEAD-OF-STATE", "Injurias al Rey"),
        ("إهانة رئيس الدولة", "A3-HEAD-OF-STATE", "إهانة رئيس الدولة"),
        ("متهم بإهانة رئيس الجمهورية", "A3-HEAD-OF-STATE", "بإهانة رئيس الجمهورية"),
        (
            "Оскорбление Президента Республики Беларусь",
            "A3-HEAD-OF-STATE",
            "Оскорбление Президента",
        ),
        ("Cumhurbaşkanına hakaret", "A3-HEAD-OF-STATE", "Cumhurbaşkanına hakaret"),
        (
            "Beleidigung des Bundespräsidenten",
            "A3-HEAD-OF-STATE",
            "Beleidigung des Bundespräsidenten",
        ),
        ("侮辱国家元首罪", "A3-HEAD-OF-STATE", "侮辱国家元首"),
        ("Sedition", "A3-SEDITION", "Sedition"),
        ("Sédition", "A3-SEDITION", "Sédition"),
        ("Delito de sedición", "A3-SEDITION", "sedición"),
        ("Propaganda against the state", "A3-PROPAGANDA", "Propaganda against the state"),
        ("Антигосударственная агитация", "A3-PROPAGANDA", "Антигосударственная агитация"),
        ("Дискредитация Вооружённых Сил", "A3-PROPAGANDA", "Дискредитация Вооружённых"),
        ("Membership of an opposition party", "A3-OPPOSITION", "Membership of an opposition party"),
        ("Participación en un partido de la oposición", "A3-OPPOSITION", "partido de la oposición"),
        ("Manifestation non autorisée", "A3-PROTEST", "Manifestation non autorisée"),
        (
            "Участие в несанкционированном митинге",
            "A3-PROTEST",
            "Участие в несанкционированном митинге",
        ),
        ("High treason", "A3-TREASON", "High treason"),
    ],
)
def test_political_charges_are_found(rules: Rules, charge: str, rule_id: str, text: str) -> None:
    findings = rules.screen(charged(charge))
    assert found(findings) == {(rule_id, "arrest_warrants[0].charge", text)}
    assert findings[0].category == "political"
    assert findings[0].explanation


@pytest.mark.parametrize(
    ("charge", "rule_id", "category", "text"),
    [
        ("Desertion", "A3-DESERTION", "military", "Desertion"),
        ("Дезертирство", "A3-DESERTION", "military", "Дезертирство"),
        ("الفرار من الخدمة العسكرية", "A3-DESERTION", "military", "الفرار من الخدمة العسكرية"),
        ("Désertion en temps de paix", "A3-DESERTION", "military", "Désertion"),
        ("Fahnenflucht", "A3-DESERTION", "military", "Fahnenflucht"),
        ("Conscientious objection", "A3-DRAFT-EVASION", "military", "Conscientious objection"),
        ("Уклонение от призыва на военную службу", "A3-DRAFT-EVASION", "military",
         "Уклонение от призыва"),
        ("Objeción de conciencia", "A3-DRAFT-EVASION", "military", "Objeción de conciencia"),
        ("Mutiny", "A3-INSUBORDINATION", "military", "Mutiny"),
        ("Blasphemy", "A3-BLASPHEMY", "religious", "Blasphemy"),
        ("Богохульство", "A3-BLASPHEMY", "religious", "Богохульство"),
        ("ازدراء الأديان", "A3-BLASPHEMY", "religious", "ازدراء الأديان"),
        ("Blasphème", "A3-BLASPHEMY", "religious", "Blasphème"),
        ("Blasfemia", "A3-BLASPHEMY", "religious", "Blasfemia"),
        ("Оскорбление религиозных чувств верующих", "A3-BLASPHEMY", "religious",
         "Оскорбление религиозных чувств"),
        ("Offending religious feelings", "A3-BLASPHEMY", "religious",
         "Offending religious feelings"),
        ("Apostasy", "A3-APOSTASY", "religious", "Apostasy"),
        ("الردة", "A3-APOSTASY", "religious", "الردة"),
        ("Apostasie", "A3-APOSTASY", "religious", "Apostasie"),
        ("Heresy", "A3-APOSTASY", "religious", "Heresy"),
        ("Membership of a banned religious group", "A3-RELIGIOUS-GROUP", "religious",
         "banned religious group"),
        ("Участие в деятельности экстремистской организации", "A3-RELIGIOUS-GROUP", "religious",
         "экстремистской организации"),
        ("Persecuted because of his ethnic origin", "A3-RACE-ETHNICITY", "racial",
         "because of his ethnic origin"),
        ("Origine ethnique", "A3-RACE-ETHNICITY", "racial", "Origine ethnique"),
    ],
)  # fmt: skip
def test_military_religious_and_racial_charges_are_found(
    rules: Rules, charge: str, rule_id: str, category: str, text: str
) -> None:
    findings = rules.screen(charged(charge))
    assert [(f.rule_id, f.category, f.field, f.text) for f in findings] == [
        (rule_id, category, "arrest_warrants[0].charge", text)
    ]


def test_the_field_names_where_the_text_was(rules: Rules) -> None:
    d = charged("Fraud", ("Оскорбление президента", "Insulting the president"))
    findings = rules.screen(d, facts="He is a known deserter.")
    assert found(findings) == {
        ("A3-HEAD-OF-STATE", "arrest_warrants[1].charge", "Оскорбление президента"),
        ("A3-HEAD-OF-STATE", "arrest_warrants[1].charge_translation", "Insulting the president"),
        ("A3-DESERTION", "facts", "deserter"),
    }


def test_matching_is_unicode_aware(rules: Rules) -> None:
    """NFKC (full-width letters), case folding (Turkish İ), Arabic short vowels, ё."""
    assert found(rules.screen(charged("ＳＥＤＩＴＩＯＮ"))) == {
        ("A3-SEDITION", "arrest_warrants[0].charge", "SEDITION")
    }
    assert found(rules.screen(charged("İSYAN"))) == {
        ("A3-SEDITION", "arrest_warrants[0].charge", "İSYAN")
    }
    vowelled = unicodedata.normalize("NFKC", "الرِّدَّةُ")  # NFKC may reorder the marks
    assert found(rules.screen(charged(f"جريمة {vowelled}"))) == {
        ("A3-APOSTASY", "arrest_warrants[0].charge", vowelled)
    }
    assert {f.rule_id for f in rules.screen(charged("Дискредитация Вооружённых Сил"))} == {
        "A3-PROPAGANDA"
    }


# --- the person's stated status --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text"),
    [
        ("Recognised refugee in Germany", "refugee"),
        ("Réfugié statutaire (OFPRA)", "Réfugié"),
        ("Refugiado reconocido", "Refugiado"),
        ("беженец", "беженец"),
        ("لاجئ", "لاجئ"),
        ("Asylum seeker", "Asylum"),
        ("Anerkannter Flüchtling", "Flüchtling"),
        ("Mülteci", "Mülteci"),
        ("难民", "难民"),
    ],
)
def test_refugee_status_is_found(rules: Rules, status: str, text: str) -> None:
    findings = rules.screen(charged("Fraud"), person_status=status)
    assert [(f.rule_id, f.category, f.field, f.text) for f in findings] == [
        ("STATUS-REFUGEE", "status", "person_status", text)
    ]


def test_status_rules_look_only_at_the_status(rules: Rules) -> None:
    """A refugee camp in the facts is no statement of the person's status."""
    assert rules.screen(charged("Fraud"), facts="He robbed a refugee camp's office.") == []


# --- completeness ----------------------------------------------------------------------------


def test_a_family_name_alone_is_not_enough(rules: Rules) -> None:
    d = draft(forename=" ", date_of_birth=None, nationalities=None, images=None)
    findings = rules.screen(d)
    assert [(f.rule_id, f.category, f.field) for f in findings] == [
        ("COMPLETE-IDENTIFIERS", "completeness", "person")
    ]
    assert findings[0].text.startswith("Иванов")


@pytest.mark.parametrize(
    "identifier",
    [
        {"forename": "Алексей"},
        {"date_of_birth": "1980"},
        {"nationalities": ("RU",)},
        {"images": ("https://example.org/1.jpg",)},
        {"distinguishing_marks": "Scar on the left cheek"},
    ],
)
def test_one_identifier_beyond_the_name_is_enough(
    rules: Rules, identifier: dict[str, object]
) -> None:
    bare = {"forename": None, "date_of_birth": None, "nationalities": (), "images": ()}
    assert rules.screen(draft(**{**bare, **identifier})) == []


def test_warrants_without_charge_or_country(rules: Rules) -> None:
    # Validation refuses these, so the drafts are built directly: screening must not rely on it.
    notice = notice_json(arrest_warrants=[{"issuing_country_id": "FR", "charge": " "}])
    assert check_draft(notice)[1]
    d = draft(arrest_warrants=(ArrestWarrant("", "Fraud"), ArrestWarrant("RU", " ")))
    assert [(f.rule_id, f.field) for f in rules.screen(d)] == [
        ("COMPLETE-WARRANT-COUNTRY", "arrest_warrants[0].issuing_country_id"),
        ("COMPLETE-WARRANT-CHARGE", "arrest_warrants[1].charge"),
    ]
    none = Draft("2026/1", "RU", (), replace(PERSON, name="", arrest_warrants=()))
    assert [(f.rule_id, f.field) for f in rules.screen(none)] == [
        ("COMPLETE-WARRANT", "arrest_warrants"),
        ("COMPLETE-NAME", "name"),
    ]


# --- findings: order, uniqueness, form -------------------------------------------------------


def test_findings_are_ordered_and_unique(rules: Rules) -> None:
    charges = ["Fraud"] * 11
    charges[2] = charges[10] = "Sedition and seditious libel"  # one finding per field
    warrants = tuple(ArrestWarrant("RU", c) for c in charges)
    d = draft(arrest_warrants=warrants, forename=None, date_of_birth=None, nationalities=None)
    findings = rules.screen(d, facts="Blasphemy; sedition.", person_status="refugee")
    assert [(f.rule_id, f.field) for f in findings] == [
        ("COMPLETE-IDENTIFIERS", "person"),
        ("A3-SEDITION", "arrest_warrants[2].charge"),
        ("A3-SEDITION", "arrest_warrants[10].charge"),
        ("A3-BLASPHEMY", "facts"),
        ("A3-SEDITION", "facts"),
        ("STATUS-REFUGEE", "person_status"),
    ]
    assert findings == rules.screen(d, facts="Blasphemy; sedition.", person_status="refugee")


def test_a_finding_round_trips_and_its_text_is_short(rules: Rules) -> None:
    d = draft(name="X" * 500, forename=None, date_of_birth=None, nationalities=None)
    (finding,) = rules.screen(d)
    assert len(finding.text) <= 200
    as_dict = finding.to_dict()
    assert set(as_dict) == {"rule_id", "category", "field", "text", "explanation"}
    assert Finding.from_dict(as_dict) == finding


# --- the user's rule files -------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_users_file_adds_overrides_and_disables_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[rule]]
id = "LOCAL-STRIKE"
category = "political"
explanation = "Strikes are political in our practice"
fields = ["facts"]
[rule.patterns]
en = ['general\\s+strike']

[[rule]]  # narrowed: only the German word
id = "A3-DESERTION"
category = "military"
explanation = "Fahnenflucht only"
[rule.patterns]
de = ['fahnenflucht']

[[rule]]
id = "A3-TREASON"
disabled = true
""",
    )
    rules = Rules.load([path])
    assert len(rules) == len(SHIPPED_IDS)  # one added, one removed
    assert "A3-TREASON" not in rules
    d = charged("Desertion", "Fahnenflucht", "High treason")
    findings = rules.screen(d, facts="Called a general strike.")
    assert [(f.rule_id, f.field, f.explanation) for f in findings] == [
        ("A3-DESERTION", "arrest_warrants[1].charge", "Fahnenflucht only"),
        ("LOCAL-STRIKE", "facts", "Strikes are political in our practice"),
    ]
    assert len(Rules.load(str(path))) == len(rules)  # one path as a string


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[rule]\nid = 1", "not TOML"),
        ("[[rule]]\ncategory = 'political'", "rule #1 has no id"),
        ("[[rule]]\nid = 'R1'\nexplanation = 'x'\n[rule.patterns]\nen = ['x']", "rule 'R1'"),
        ("[[rule]]\nid = 'R1'\ncategory = 'economic'\nexplanation = 'x'\n"
         "[rule.patterns]\nen = ['x']", "category must be one of"),
        ("[[rule]]\nid = 'R1'\ncategory = 'political'\nexplanation = 'x'", "no patterns"),
        ("[[rule]]\nid = 'R1'\ncategory = 'political'\nexplanation = 'x'\n"
         "[rule.patterns]\nen = ['(unclosed']", "pattern '(unclosed' (en) is not a valid regex"),
        ("[[rule]]\nid = 'R1'\ncategory = 'political'\nexplanation = 'x'\n"
         "[rule.patterns]\nen = ['x*']", "matches the empty text"),
        ("[[rule]]\nid = 'R1'\ncategory = 'political'\nexplanation = 'x'\npattern = ['x']",
         "unknown keys ['pattern']"),
        ("[[rule]]\nid = 'R1'\ncategory = 'political'\nexplanation = 'x'\nfields = ['name']\n"
         "[rule.patterns]\nen = ['x']", "fields must be"),
        ("[[rule]]\nid = 'R1'\ndisabled = true\n[[rule]]\nid = 'R1'\ndisabled = true",
         "rule 'R1' is defined twice"),
        ("[rules]\nid = 'R1'", "only [[rule]] tables"),
    ],
)  # fmt: skip
def test_a_bad_file_is_a_config_error_naming_it(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Rules.load([path])
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="cannot read"):
        Rules.load([missing])
    write(tmp_path, "", "bad.toml").write_bytes(b"\xff\xfe[[rule]]")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        Rules.load([tmp_path / "bad.toml"])
