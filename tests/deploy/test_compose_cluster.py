"""`docker compose --profile cluster up`: RabbitMQ as three nodes that form one cluster and
handle a partition as the fault suite's cluster does (tests/faults/test_rabbitmq_cluster.py),
every client reaching them through the one balancer, whose configuration HAProxy accepts.
Validated without a Docker engine, like the main file (tests/deploy/test_compose.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy.test_compose import (
    CLUSTER_ONLY,
    COMPOSE,
    ROOT,
    _environment,
    _volumes,
    resolve,
)

NODES = ("rabbitmq", *sorted(CLUSTER_ONLY))
CLUSTER_CONF = ROOT / "deploy/rabbitmq/30-cluster.conf"
CLUSTER_CONF_IN_RABBITMQ = "/etc/rabbitmq/conf.d/30-cluster.conf"
HAPROXY_CFG = ROOT / "deploy/haproxy/haproxy.cfg"


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    result = resolve(COMPOSE, profile="cluster")
    assert result.returncode == 0, f"docker-compose config --profile cluster rejected the file:\n{result.stderr}"
    return yaml.safe_load(result.stdout)["services"]


def test_three_nodes_with_their_own_names_and_data_and_one_cookie(cluster: dict[str, Any]) -> None:
    assert all(cluster[name].get("profiles") == ["cluster"] for name in CLUSTER_ONLY)
    images = {cluster[node]["image"] for node in NODES}
    assert len(images) == 1 and re.search(r":3\.1[3-9]|:[4-9]\.", images.pop()), "continuous membership reconciliation needs 3.13+"
    hostnames = [cluster[node]["hostname"] for node in NODES]
    assert hostnames == list(NODES)
    data = [next(v["source"] for v in _volumes(cluster[node]) if v["target"] == "/var/lib/rabbitmq") for node in NODES]
    assert len(set(data)) == 3, data
    cookies = {_environment(cluster[node])["RABBITMQ_ERLANG_COOKIE"] for node in NODES}
    assert len(cookies) == 1 and len(cookies.pop()) >= 32
    for node in CLUSTER_ONLY:
        assert cluster[node]["depends_on"]["rabbitmq"]["condition"] == "service_healthy", node


def test_every_node_forms_the_cluster_from_the_same_file(cluster: dict[str, Any]) -> None:
    for node in NODES:
        mounted = {v["target"]: Path(v["source"]).resolve() for v in _volumes(cluster[node]) if v.get("type", "bind") == "bind"}
        assert mounted[CLUSTER_CONF_IN_RABBITMQ] == CLUSTER_CONF.resolve(), node
    settings = dict(
        line.split(" = ", 1) for line in CLUSTER_CONF.read_text().splitlines() if line and not line.startswith("#")
    )
    assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
    peers = {v for k, v in settings.items() if k.startswith("cluster_formation.classic_config.nodes.")}
    assert peers == {f"rabbit@{cluster[node]['hostname']}" for node in NODES}
    assert settings["cluster_partition_handling"] == "pause_minority"
    assert settings["quorum_queue.continuous_membership_reconciliation.enabled"] == "true"
    assert settings["quorum_queue.continuous_membership_reconciliation.target_group_size"] == str(len(NODES))


def test_every_client_reaches_the_nodes_through_the_balancer(cluster: dict[str, Any]) -> None:
    broker = cluster["broker"]
    mounted = {v["target"]: Path(v["source"]).resolve() for v in _volumes(broker)}
    assert mounted["/usr/local/etc/haproxy/haproxy.cfg"] == HAPROXY_CFG.resolve()
    servers = re.findall(r"^\s+server \S+ (\S+)$", HAPROXY_CFG.read_text(), re.MULTILINE)
    assert servers == [f"{node}:5672" for node in NODES]
    for name, service in cluster.items():
        url = _environment(service).get("CONTACTS_AMQP_URL")
        if url:
            assert urlsplit(url).hostname == "broker" and urlsplit(url).port == 5672, name


def test_haproxy_accepts_the_balancers_configuration() -> None:
    program = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(program).exists():
        pytest.fail("HAProxy is not installed: apt-get install haproxy (scripts/test does it as root)")
    result = subprocess.run([program, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0 and "Configuration file is valid" in result.stdout, result.stdout + result.stderr
