"""Every producer is durable (issue 18): idempotent and acks=all, from one place.

``kafka_config(..., producer=True)`` says ``acks="all"`` and ``enable_idempotence=True``. The
rule, read from the source with ``ast``: every ``KafkaProducer(...)`` in ``src`` takes its
options from there, and passes nothing that would weaken them. Then a producer so built, on
the real broker, reports idempotence on.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
from kafka import KafkaProducer

from notice_bus.bureau.clients import open_clients
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.wire.topics import TopicNames, init_topics

SRC = Path(__file__).resolve().parents[1] / "src" / "notice_bus"
#: The options that would weaken a producer, and the values they may take.
_STRONG: dict[str, tuple[object, ...]] = {"acks": ("all", -1), "enable_idempotence": (True,)}
#: Methods that change a dict in place: a config built by kafka_config and then changed.
_MUTATORS = {"update", "pop", "popitem", "setdefault", "clear", "__setitem__", "__delitem__"}


def _is_durable_config(node: ast.expr) -> bool:
    """``kafka_config(..., producer=True)``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name == "kafka_config" and any(
        k.arg == "producer" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in node.keywords
    )


def _literal_in(node: ast.expr, allowed: tuple[object, ...]) -> bool:
    """``node`` is a literal equal to one of ``allowed``, and of its type (``1`` is not
    ``True``); anything computed is not."""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return False
    return any(type(value) is type(a) and value == a for a in allowed)


def _changes(scope: ast.AST, name: str) -> list[ast.AST]:
    """Where ``name`` is changed in place in ``scope``: ``name[k] = v``, ``name |= ...``,
    ``del name[k]``, ``name.update(...)`` and the like."""
    found: list[ast.AST] = []
    for node in ast.walk(scope):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            if isinstance(node.value, ast.Name) and node.value.id == name:
                found.append(node)
        elif isinstance(node, ast.AugAssign):
            if isinstance(node.target, ast.Name) and node.target.id == name:
                found.append(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == name and node.func.attr in _MUTATORS:
                found.append(node)
    return found


def _assigned(scope: ast.AST, name: str) -> list[ast.expr]:
    """Every value assigned to ``name`` in ``scope`` (``a = b = v`` and ``name: T = v`` too);
    a name bound otherwise (a loop, ``with ... as``, a parameter) gives no value: refused."""
    values: list[ast.expr] = []
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                values.append(node.value)
        elif (
            isinstance(node, ast.AnnAssign)
            and node.value is not None
            and isinstance(node.target, ast.Name)
            and node.target.id == name
        ):
            values.append(node.value)
    return values


def _producer_names(tree: ast.Module) -> set[str]:
    """The names ``KafkaProducer`` goes by in a module (``from kafka import KafkaProducer as
    P`` included)."""
    names = {"KafkaProducer"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kafka"):
            names |= {a.asname for a in node.names if a.name == "KafkaProducer" and a.asname}
    return names


def problems(source: str, where: str = "<source>") -> tuple[int, list[str]]:
    """How many producers ``source`` makes, and what is wrong with each that is not durable."""
    tree = ast.parse(source, where)
    names = _producer_names(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    count, bad = 0, []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if called not in names:
            continue
        count += 1
        scope: ast.AST = node
        while scope in parents and not isinstance(
            scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)
        ):
            scope = parents[scope]
        line = f"{where}:{node.lineno}"
        if node.args:
            bad.append(f"{line}: positional arguments")
        spreads = [k.value for k in node.keywords if k.arg is None]
        durable = False
        for spread in spreads:
            if _is_durable_config(spread):
                durable = True
            elif isinstance(spread, ast.Name):
                values = _assigned(scope, spread.id)
                if values and all(_is_durable_config(v) for v in values):
                    durable = True
                    if _changes(scope, spread.id):
                        bad.append(f"{line}: {spread.id} is changed after kafka_config")
                else:
                    bad.append(f"{line}: **{spread.id} is not kafka_config(..., producer=True)")
            else:
                bad.append(f"{line}: **{ast.unparse(spread)} is not kafka_config(producer=True)")
        if not durable:
            bad.append(f"{line}: does not take **kafka_config(..., producer=True)")
        for keyword in node.keywords:
            allowed = _STRONG.get(keyword.arg or "")
            if allowed is None:
                continue
            if not _literal_in(keyword.value, allowed):
                bad.append(f"{line}: {keyword.arg}={ast.unparse(keyword.value)}")
    return count, bad


def test_every_producer_in_src_is_idempotent_with_acks_all() -> None:
    count, bad = 0, []
    for path in sorted(SRC.rglob("*.py")):
        found, wrong = problems(path.read_text(), str(path.relative_to(SRC.parent)))
        count += found
        bad += wrong
    assert bad == []
    # The HQ relay, the adapter (acks and dead letters), the DLQ replay, answers, requests,
    # copy checks, reminders, schemas, the keyring and its re-signing: none went unread.
    assert count >= 10


@pytest.mark.parametrize(
    ("source", "wrong"),
    [
        ("KafkaProducer(**kafka_config(s, 'x', producer=True), linger_ms=5)", None),
        ("c = kafka_config(s, 'x', producer=True)\nKafkaProducer(**c)", None),
        ("KafkaProducer(**kafka_config(s, 'x', producer=True), acks=-1)", None),
        ("KafkaProducer(bootstrap_servers='k:9092')", "does not take"),
        ("KafkaProducer(**kafka_config(s, 'x'))", "not kafka_config"),
        ("KafkaProducer(**kafka_config(s, 'x', producer=True), acks=1)", "acks=1"),
        ("KafkaProducer(**kafka_config(s, 'x', producer=True), acks=n)", "acks=n"),
        (
            "KafkaProducer(**kafka_config(s, 'x', producer=True), enable_idempotence=False)",
            "enable_idempotence=False",
        ),
        (
            "c = kafka_config(s, 'x', producer=True)\nc['acks'] = 1\nKafkaProducer(**c)",
            "changed after",
        ),
        ("c = kafka_config(s, 'x', producer=True)\nc.update(x)\nKafkaProducer(**c)", "changed"),
        ("c = {}\nKafkaProducer(**c)", "not kafka_config"),
        (
            "from kafka import KafkaProducer as P\nP(bootstrap_servers='k:9092')",
            "does not take",
        ),
        ("kafka.KafkaProducer(acks=0)", "acks=0"),
    ],
)
def test_the_rule_catches_a_weak_producer(source: str, wrong: str | None) -> None:
    count, bad = problems(textwrap.dedent(source))
    assert count == 1
    if wrong is None:
        assert bad == []
    else:
        assert bad and any(wrong in b for b in bad), bad


def test_kafka_config_says_acks_all_and_idempotence_for_producers_only() -> None:
    s = Settings()
    producer = kafka_config(s, "x", producer=True)
    assert producer["acks"] == "all" and producer["enable_idempotence"] is True
    # Consumers and admin clients refuse options they do not know.
    assert not {"acks", "enable_idempotence"} & set(kafka_config(s, "x"))


def _durable(producer: KafkaProducer) -> tuple[object, object]:
    """What a producer is running with: ``config`` is kafka-python's public dict of them,
    with idempotence turned off there if a conflicting option had disabled it."""
    return producer.config["enable_idempotence"], producer.config["acks"]


@pytest.mark.kafka
def test_a_producer_from_kafka_config_is_idempotent_on_the_broker(settings: Settings) -> None:
    init_topics(settings, ["FR"])
    producer = KafkaProducer(**kafka_config(settings, "test-durable", producer=True))
    try:
        assert _durable(producer) == (True, -1)
        topic = TopicNames(settings.topic_prefix).dead_letters("FR")
        meta = producer.send(topic, key=b"k", value=b"v").get(timeout=30)
        assert meta.offset >= 0  # the broker took it, from an idempotent producer
    finally:
        producer.close(timeout=5)


@pytest.mark.kafka
def test_the_adapters_producer_is_idempotent(settings: Settings) -> None:
    """The adapter's producer writes acknowledgements and dead letters."""
    init_topics(settings, ["FR"])
    names = TopicNames(settings.topic_prefix)
    consumer, producer = open_clients(
        settings, "test-adapter", f"{settings.topic_prefix}g", [names.notices("FR")], None, None
    )
    try:
        assert _durable(producer) == (True, -1)
        assert producer.config["linger_ms"] == 5
    finally:
        producer.close(timeout=5)
        consumer.close()
