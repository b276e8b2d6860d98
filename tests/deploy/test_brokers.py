"""The brokers' files of deploy/compose: EMQX's config and ACL, Mosquitto's config.

No EMQX runs on the development machine. The ACL is parsed by the grammar EMQX documents
at the top of its own etc/acl.conf (Erlang terms; rule() :: {perm(), who(), action(),
[topic_match()]} | {perm(), all}) and then evaluated as EMQX evaluates it: first
matching rule wins, ``authorization.no_match`` otherwise, ``${username}`` rendered into
the topics, ``{eq, T}`` compared literally, a shared subscription ``$share/<g>/<f>``
authorized as ``<f>``, and wildcards never matching a ``$`` topic. emqx.conf is parsed
as HOCON (pyhocon) and its paths and limits compared with compose.yaml and ingest.
"""

from __future__ import annotations

# ruff: noqa: TRY004 - a malformed rule is a ValueError, whatever its type
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyhocon import ConfigFactory, ConfigTree

from ingest.settings import MAX_PACKET_BYTES
from tests.deploy.compose import COMPOSE_DIR, chosen_env, interpolate, raw
from zhizao.wire import data_topic, status_topic, subscription_filter

ACL = COMPOSE_DIR / "emqx" / "acl.conf"
EMQX_CONF = COMPOSE_DIR / "emqx" / "emqx.conf"
SHIPPED_MOSQUITTO = COMPOSE_DIR.parent / "mosquitto" / "mosquitto.conf"
ENT, OTHER_ENT = "91330206MA2GR7K17L", "91330106MA2XXXXX0Y"
EDGE = f"{ENT}/edge/EDGE-RC-01"


# -- Erlang terms, as much of them as acl.conf may hold -------------------------------


@dataclass(frozen=True)
class Atom:
    name: str


_TOKEN = re.compile(
    r'\s+|%[^\n]*|(?P<string>"(?:[^"\\]|\\.)*")|(?P<int>\d+)|(?P<atom>[a-z][A-Za-z0-9_@]*|\'[^\']*\')'
    r"|(?P<punct>[{}\[\],.])"
)


def parse_terms(text: str) -> list[Any]:
    """The dot-terminated terms of an Erlang consult file: atoms, strings, integers,
    tuples (Python tuples), lists; anything else is an error naming the offset."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"offset {pos}: unexpected {text[pos : pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind is not None:
            tokens.append((kind, match.group(kind)))
    terms: list[Any] = []
    index = 0

    def term() -> Any:
        nonlocal index
        kind, value = tokens[index]
        index += 1
        if kind == "string":
            return bytes(value[1:-1], "utf-8").decode("unicode_escape")
        if kind == "int":
            return int(value)
        if kind == "atom":
            return Atom(value.strip("'"))
        if value in "{[":
            close = "}" if value == "{" else "]"
            items: list[Any] = []
            while tokens[index][1] != close:
                items.append(term())
                if tokens[index][1] == ",":
                    index += 1
                elif tokens[index][1] != close:
                    raise ValueError(f"expected , or {close}, got {tokens[index][1]!r}")
            index += 1
            return tuple(items) if close == "}" else items
        raise ValueError(f"unexpected {value!r}")

    while index < len(tokens):
        terms.append(term())
        if index >= len(tokens) or tokens[index][1] != ".":
            raise ValueError("a term must end with a dot")
        index += 1
    return terms


# -- EMQX's rule grammar and evaluation ------------------------------------------------

_PERM = {"allow", "deny"}
_SIMPLE_ACTIONS = {"publish", "subscribe", "all"}


def check_rule(rule: Any) -> None:  # noqa: PLR0912 - one branch per grammar case
    """ValueError unless ``rule`` is a rule() of EMQX's acl.conf spec."""
    if not isinstance(rule, tuple):
        raise ValueError(f"{rule!r}: a rule is a tuple")
    if len(rule) == 2:
        if not (isinstance(rule[0], Atom) and rule[0].name in _PERM and rule[1] == Atom("all")):
            raise ValueError(f"{rule!r}: a 2-tuple rule is {{allow|deny, all}}")
        return
    if len(rule) != 4:
        raise ValueError(f"{rule!r}: a rule has 2 or 4 elements")
    perm, who, action, topics = rule
    if not (isinstance(perm, Atom) and perm.name in _PERM):
        raise ValueError(f"{perm!r}: not allow or deny")
    check_who(who)
    if isinstance(action, tuple):
        simple, options = action
        if not (isinstance(simple, Atom) and simple.name in _SIMPLE_ACTIONS):
            raise ValueError(f"{action!r}: not an action")
        for key, value in options:
            if key == Atom("qos"):
                assert value in (0, 1, 2)
            elif key != Atom("retain") or value not in (Atom("true"), Atom("false"), Atom("all")):
                raise ValueError(f"{action!r}: bad action option")
    elif not (isinstance(action, Atom) and action.name in _SIMPLE_ACTIONS):
        raise ValueError(f"{action!r}: not publish, subscribe or all")
    if not isinstance(topics, list) or not topics:
        raise ValueError(f"{topics!r}: topics are a non-empty list")
    for topic in topics:
        if isinstance(topic, tuple):
            if not (len(topic) == 2 and topic[0] == Atom("eq") and isinstance(topic[1], str)):
                raise ValueError(f"{topic!r}: a tuple topic is {{eq, Topic}}")
        elif not isinstance(topic, str):
            raise ValueError(f"{topic!r}: a topic is a string")


def check_who(who: Any) -> None:
    if who == Atom("all"):
        return
    if not (isinstance(who, tuple) and len(who) == 2 and isinstance(who[0], Atom)):
        raise ValueError(f"{who!r}: not a who()")
    kind, value = who[0].name, who[1]
    if kind in ("user", "username", "client", "clientid"):
        if isinstance(value, tuple):
            assert value[0] == Atom("re"), who
            assert isinstance(value[1], str), who
            re.compile(value[1])
        elif not isinstance(value, str):
            raise ValueError(f"{who!r}: a name is a string or {{re, Regex}}")
    elif kind in ("and", "or"):
        for part in value:
            check_who(part)
    elif kind == "ipaddr":
        assert isinstance(value, str)
    elif kind == "ipaddrs":
        assert all(isinstance(v, str) for v in value)
    else:
        raise ValueError(f"{who!r}: unknown who() {kind}")


def _matches_who(who: Any, username: str) -> bool:
    if who == Atom("all"):
        return True
    kind, value = who[0].name, who[1]
    if kind in ("user", "username"):
        if isinstance(value, tuple):
            return re.search(value[1], username) is not None
        return bool(value == username)
    if kind == "and":
        return all(_matches_who(part, username) for part in value)
    if kind == "or":
        return any(_matches_who(part, username) for part in value)
    return False  # clients and addresses: the cases below connect from anywhere


def topic_match(name: str, rule_filter: str) -> bool:
    """MQTT topic matching; ``name`` may be a subscription filter itself, whose wildcard
    levels match only the same wildcard (or #) in the rule, as EMQX's emqx_topic:match."""
    if name.startswith("$") and rule_filter[:1] in ("+", "#"):
        return False
    levels, rules = name.split("/"), rule_filter.split("/")
    for i, rule in enumerate(rules):
        if rule == "#":
            return True
        if i >= len(levels):
            return False
        if rule == "+":
            if levels[i] == "#":
                return False
            continue
        if rule != levels[i]:
            return False
    return len(levels) == len(rules)


def authorize(rules: list[Any], username: str, action: str, topic: str) -> str:
    """allow or deny, as EMQX decides with authorization.no_match = deny."""
    if action == "subscribe" and topic.startswith("$share/"):
        topic = topic.split("/", 2)[2]  # emqx_topic:get_shared_real_topic
    for rule in rules:
        if len(rule) == 2:
            return rule[0].name
        perm, who, rule_action, topics = rule
        simple = rule_action[0] if isinstance(rule_action, tuple) else rule_action
        if simple.name not in ("all", action) or not _matches_who(who, username):
            continue
        for pattern in topics:
            if isinstance(pattern, tuple):
                if pattern[1].replace("${username}", username) == topic:
                    return str(perm.name)
            elif topic_match(topic, pattern.replace("${username}", username)):
                return str(perm.name)
    return "deny"


@pytest.fixture(scope="module")
def rules() -> list[Any]:
    parsed = parse_terms(ACL.read_text(encoding="utf-8"))
    for rule in parsed:
        check_rule(rule)
    return parsed


def _check_all(text: str) -> None:
    for rule in parse_terms(text):
        check_rule(rule)


def test_the_parser_follows_emqx_default_acl() -> None:
    """The rules of EMQX 5's own etc/acl.conf parse, and a malformed one is refused."""
    default = """
{allow, {username, {re, "^dashboard$"}}, subscribe, ["$SYS/#"]}.
{allow, {ipaddr, "127.0.0.1"}, all, ["$SYS/#", "#"]}.
{deny, all, subscribe, ["$SYS/#", {eq, "#"}]}.
{allow, all, {publish, [{qos, 1}, {retain, false}]}, ["a/b"]}.
{allow, all}.
"""
    for rule in parse_terms(default):
        check_rule(rule)
    for bad in ('{allow, {username, "a"}, pub, ["t"]}.', '{allow, {user, "a"}, all, "t"}.',
                '{allow, {username, "a"}, all, ["t"]}', '{permit, all}.'):  # fmt: skip
        with pytest.raises((ValueError, IndexError)):
            _check_all(bad)


def test_an_edge_publishes_only_under_its_own_enterprise_and_edge_id(rules: list[Any]) -> None:
    assert authorize(rules, EDGE, "publish", data_topic(ENT, "EDGE-RC-01")) == "allow"
    assert authorize(rules, EDGE, "publish", status_topic(ENT, "EDGE-RC-01")) == "allow"
    assert authorize(rules, EDGE, "subscribe", status_topic(ENT, "EDGE-RC-01")) == "allow"
    for topic in (
        data_topic(ENT, "EDGE-RC-02"),  # another edge of the same enterprise
        data_topic(OTHER_ENT, "EDGE-RC-01"),  # the same edge id in another enterprise
        f"zhizao/v1/{ENT}/edge/EDGE-RC-01/commands",
        "zhizao/v1/x",
        "$SYS/brokers",
    ):
        assert authorize(rules, EDGE, "publish", topic) == "deny", topic
    shared = f"$share/x/{subscription_filter('data')}"
    for subscription in ("#", "zhizao/v1/#", subscription_filter("data"),
                         f"zhizao/v1/{ENT}/edge/+/status", shared, "$queue/q/#"):  # fmt: skip
        assert authorize(rules, EDGE, "subscribe", subscription) == "deny", subscription


def test_ingest_reads_every_edge_through_the_shared_subscription_and_writes_nothing(
    rules: list[Any],
) -> None:
    for kind in ("data", "status"):
        shared = f"$share/ingest/{subscription_filter(kind)}"
        assert authorize(rules, "zhizao-ingest", "subscribe", shared) == "allow"
        assert authorize(rules, "zhizao-ingest", "subscribe", subscription_filter(kind)) == "allow"
    for subscription in ("#", "zhizao/#", "$SYS/#", "$queue/q/zhizao/v1/#"):
        assert authorize(rules, "zhizao-ingest", "subscribe", subscription) == "deny"
    assert authorize(rules, "zhizao-ingest", "publish", data_topic(ENT, "EDGE-RC-01")) == "deny"


def test_unknown_and_wildcard_users_get_nothing(rules: list[Any]) -> None:
    for user in ("nobody", "+/edge/+", f"{ENT}/edge/#", f"{ENT}/edge/a/b", "zhizao-ingest2"):
        assert authorize(rules, user, "publish", data_topic(ENT, "EDGE-RC-01")) == "deny", user
        assert authorize(rules, user, "subscribe", subscription_filter("data")) == "deny", user
    # The last rule refuses what no rule allows, even with no_match set otherwise.
    assert rules[-1] == (Atom("deny"), Atom("all"))


def test_the_evaluation_would_catch_a_loose_rule() -> None:
    loose = parse_terms('{allow, all, publish, ["zhizao/v1/+/edge/+/data"]}.\n{deny, all}.')
    assert authorize(loose, EDGE, "publish", data_topic(OTHER_ENT, "X")) == "allow"


# -- emqx.conf ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emqx_conf() -> ConfigTree:
    return ConfigFactory.parse_file(str(EMQX_CONF))


def test_emqx_conf_fits_compose_and_ingest(emqx_conf: ConfigTree) -> None:
    compose = interpolate(raw(), chosen_env())
    node = compose["services"]["emqx1"]
    mounts = {target: source for source, target, *_ in (m.split(":") for m in node["volumes"])}
    users = {c["target"]: c["source"] for c in node["configs"]}

    assert emqx_conf["authorization.no_match"] == "deny"
    [source] = emqx_conf["authorization.sources"]
    assert (source["type"], source["enable"]) == ("file", True)
    assert mounts[source["path"]] == "./emqx/acl.conf"
    [authn] = emqx_conf["authentication"]
    assert (authn["mechanism"], authn["backend"]) == ("password_based", "built_in_database")
    assert authn["user_id_type"] == "username"
    assert authn["password_hash_algorithm.name"] in ("pbkdf2", "bcrypt")
    assert users[authn["bootstrap_file"]] == "emqx_users"
    ssl = emqx_conf["listeners.ssl.default.ssl_options"]
    certs = next(t for t, s in mounts.items() if s == "./certs")
    for key in ("cacertfile", "certfile", "keyfile"):
        assert ssl[key].startswith(certs + "/"), key
        assert Path(ssl[key]).name in (COMPOSE_DIR / "certs" / "README.md").read_text()
    assert set(ssl["versions"]) <= {"tlsv1.2", "tlsv1.3"}
    # The same packet bound as the shipped Mosquitto and ingest's default.
    size = emqx_conf["mqtt.max_packet_size"]
    assert size.endswith("KB")
    assert int(size.removesuffix("KB")) * 1024 == MAX_PACKET_BYTES
    # The cluster's seeds are the nodes compose names.
    names = {compose["services"][n]["environment"]["EMQX_NODE_NAME"] for n in ("emqx1", "emqx2")}
    assert set(emqx_conf["cluster.static.seeds"]) == names
    assert emqx_conf["cluster.discovery_strategy"] == "static"
    # Ingest workers connect to the plain listener inside the compose network.
    assert emqx_conf["listeners.tcp.default.bind"].endswith(":1883")
    assert emqx_conf["listeners.ssl.default.bind"].endswith(":8883")
    assert "8883" in " ".join(node["ports"])
    assert not any("1883" in port for port in node["ports"])  # never published


def test_emqx_users_seed_names_the_ingest_user_and_acl_shaped_edges(
    rules: list[Any],
) -> None:
    content = interpolate(raw(), chosen_env())["configs"]["emqx_users"]["content"]
    rows = list(csv.DictReader(io.StringIO(content)))
    assert list(rows[0]) == ["user_id", "password", "is_superuser"]
    assert {row["is_superuser"] for row in rows} == {"false"}
    assert "zhizao-ingest" in {row["user_id"] for row in rows}
    for row in rows:
        assert row["password"].startswith("chosen-"), "a password that is not from .env"
        if "/edge/" in row["user_id"]:
            ent, _, edge = row["user_id"].partition("/edge/")
            assert authorize(rules, row["user_id"], "publish", data_topic(ent, edge)) == "allow"


# -- Mosquitto in compose -------------------------------------------------------------

_MOSQUITTO_CHANGES = [
    ("/etc/mosquitto/passwd", "/mosquitto/config/passwd"),
    ("/etc/mosquitto/acl", "/mosquitto/config/acl"),
    ("/etc/mosquitto/certs/", "/mosquitto/config/certs/"),
    ("/var/lib/mosquitto/", "/mosquitto/data/"),
    ("listener 1883 127.0.0.1", "listener 1883"),
    ("log_dest syslog", "log_dest stdout"),
]


def _settings_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_compose_mosquitto_is_the_shipped_config_with_the_image_paths() -> None:
    expected = []
    for line in _settings_lines(SHIPPED_MOSQUITTO):
        changed = line
        for old, new in _MOSQUITTO_CHANGES:
            changed = changed.replace(old, new)
        expected.append(changed)
    assert _settings_lines(COMPOSE_DIR / "mosquitto" / "mosquitto.conf") == expected
    mounts = raw()["services"]["mosquitto"]["volumes"]
    targets = {m.split(":")[1]: m.split(":")[0] for m in mounts}
    assert targets["/mosquitto/config/acl"] == "../mosquitto/acl.template"
    assert targets["/mosquitto/config/passwd"] == "./mosquitto/passwd"
    assert targets["/mosquitto/data"] == "mosquitto-data"
