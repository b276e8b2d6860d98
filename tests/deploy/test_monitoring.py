"""deploy/prometheus: the alert rules name metrics the services really export.

No Prometheus runs here. Each rule is read as Prometheus's rule loader reads it (groups,
alert, expr, for, labels, annotations), its expression parsed as PromQL
(promql-parser), and every metric it selects looked up in the exposition of the real
registries: the edge's (a real spool and uplink), ingest's, the API's and, once it is on
this branch, the rollup service's. prometheus.yml's targets are compose's services.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.config import parse_config
from edge.health import EdgeMetrics
from edge.spool import Spool
from edge.uplink import Uplink
from ingest.metrics import IngestMetrics
from ingest.rollup_service import RollupMetrics
from platform_api.metrics import ApiMetrics
from tests.deploy.compose import chosen_env, interpolate, raw

PROMETHEUS = Path(__file__).parents[2] / "deploy" / "prometheus"
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
BUILTIN = {"up"}  # Prometheus's own series of every scrape target


def _names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry exposes, with the suffixes of its type."""
    names: set[str] = set()
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    import asyncio

    path = tmp_path_factory.mktemp("edge") / "spool.db"
    topic = {"topic": "t/{device}", "fields": [{"path": "v", "name": "v"}]}
    source = {"type": "mqtt", "name": "m", "broker": {"url": "mqtt://x"}, "topics": [topic]}
    config = parse_config({
        "identity": {"enterprise": "91330206MA2GR7K17L", "edge_id": "EDGE-RC-01"},
        "uplink": {"url": "mqtt://127.0.0.1:1"}, "spool": {"path": str(path)},
        "sources": [source],
    }, source="test")  # fmt: skip

    async def edge_names() -> set[str]:
        async with Spool(path, enterprise="91330206MA2GR7K17L", edge="EDGE-RC-01") as spool:
            uplink = Uplink(config.uplink, enterprise="91330206MA2GR7K17L",
                            edge_id="EDGE-RC-01", spool=spool)  # fmt: skip
            registry = CollectorRegistry(auto_describe=False)
            registry.register(EdgeMetrics(spool, uplink, {}))
            return _names(registry)

    names = {
        "zhizao-edge": asyncio.run(edge_names()),
        "zhizao-ingest": _names(IngestMetrics().registry),
        "zhizao-api": _names(ApiMetrics().registry),
    }
    names["zhizao-rollup"] = _names(RollupMetrics().registry)
    return names


def _groups() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    assert set(doc) == {"groups"}
    groups: list[dict[str, Any]] = doc["groups"]
    return groups


def _selected(expr: str) -> Iterator[str]:
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.append(node.name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    yield from found


def test_rules_are_what_the_rule_loader_reads() -> None:
    seen: set[str] = set()
    for group in _groups():
        assert set(group) <= {"name", "interval", "limit", "rules"}
        assert group["name"].startswith("zhizao-")
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule
            assert rule["alert"] not in seen, f"{rule['alert']} twice"
            seen.add(rule["alert"])
            promql_parser.parse(rule["expr"])  # ValueError names the problem
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            assert rule["labels"]["severity"] in ("page", "ticket")
            assert rule["annotations"]["summary"]
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("rate(zhizao_ingest_points_received_total[5m]")


@pytest.mark.parametrize("group", [g["name"] for g in _groups()])
def test_every_metric_an_alert_names_is_exported(group: str, exported: dict[str, set[str]]) -> None:
    assert group in exported, f"{group}: no such service exports metrics"
    names = exported[group]
    [rules] = [g["rules"] for g in _groups() if g["name"] == group]
    for rule in rules:
        for metric in _selected(rule["expr"]):
            assert metric in names or metric in BUILTIN, (
                f"{rule['alert']}: {metric} is not exported by {group}"
            )
            if metric == "up":
                assert f'job="{group}"' in rule["expr"]


def test_a_misspelt_metric_would_be_caught(exported: dict[str, set[str]]) -> None:
    assert set(_selected("zhizao_ingest_broker_conected == 0")) - exported["zhizao-ingest"]


def test_scrape_targets_are_the_compose_services() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    compose = interpolate(raw(), chosen_env())
    services = compose["services"]
    mounts = [m.split(":") for m in services["prometheus"]["volumes"]]
    assert ["../prometheus/alerts.yml", "/etc/prometheus/alerts.yml", "ro"] in mounts
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {g["name"] for g in _groups()} <= set(jobs)
    for job in jobs.values():
        for target in job["static_configs"][0]["targets"]:
            host, _, port = target.partition(":")
            assert host in services, f"{job['job_name']}: {host} is no compose service"
            env = services[host].get("environment") or {}
            health = env.get("ZHIZAO_HEALTH_URL", "")
            assert port in health or host.startswith("emqx"), f"{target}: not its metrics port"
