"""More than one machine, on this one: a RabbitMQ cluster of three nodes behind HAProxy, and a
PostgreSQL primary with a synchronous streaming standby. Each node has its own name, ports and
data directory (tests/own_nodes.py), and the faults done to them are the ones a real cluster
meets: a node killed with SIGKILL, a node cut off from the others, the primary gone and its
standby promoted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from own_nodes import OwnPostgres, OwnRabbit, as_user, chown, own_rabbit
from support import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# How the deployment's nodes handle a partition (deploy/rabbitmq/30-cluster.conf); the rest of
# that file names the deployment's hosts, or needs RabbitMQ 3.13 (this machine's may be older).
CLUSTER_CONFIG = "".join(
    line + "\n" for line in (DEPLOY / "rabbitmq" / "30-cluster.conf").read_text().splitlines() if line.startswith("cluster_partition_handling")
)

# The deployment's balancer (deploy/haproxy/haproxy.cfg), its servers being the test's nodes.
HAPROXY_CONFIG = DEPLOY / "haproxy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"  # in sbin, off a plain user's PATH


def haproxy_config(deployed: str, port: int, backends: list[int]) -> str:
    """The deployed configuration listening on 127.0.0.1:`port`, in front of `backends`."""
    lines = []
    for line in deployed.splitlines():
        if line.strip().startswith("bind "):
            line = f"    bind 127.0.0.1:{port}"
        elif line.strip().startswith("server "):
            if backends:
                lines.extend(f"    server node{i} 127.0.0.1:{p}" for i, p in enumerate(backends, 1))
                backends = []
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class HAProxy:
    """HAProxy in front of AMQP ports: one address for the clients, whichever nodes serve."""

    directory: Path
    port: int
    backends: list[int]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.directory / "haproxy.cfg"
        config.write_text(haproxy_config(HAPROXY_CONFIG.read_text(), self.port, self.backends))
        log = (self.directory / "haproxy.log").open("wb")
        self.process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy did not start: {(self.directory / 'haproxy.log').read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@dataclass
class RabbitCluster:
    nodes: list[OwnRabbit]
    proxy: HAProxy

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.proxy.port}/"

    def start(self) -> None:
        """Start the nodes side by side, join the second and third to the first, then the balancer."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(OwnRabbit.start, self.nodes))
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", self.nodes[0].node)
            node.ctl("start_app")
        self.wait_all_running(timeout=60)
        self.proxy.start()

    def serving(self) -> OwnRabbit:
        """A node that is up and not cut off (to ask about the cluster)."""
        for node in self.nodes:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                if node.ctl("eval", "rabbit:is_running().", timeout=15).strip() == "true":
                    return node
        raise RuntimeError("no node of the cluster is running")

    def queues(self, prefix: str) -> dict[str, tuple[int, int]]:
        return self.serving().queues(prefix)

    def leaders(self, prefix: str) -> dict[str, str]:
        """{queue: node leading it} of the quorum queues named `prefix…`."""
        out = self.serving().ctl("list_queues", "-q", "--no-table-headers", "name", "leader")
        return {parts[0]: parts[1] for line in out.splitlines() if len(parts := line.split()) == 2 and parts[0].startswith(prefix)}

    def members(self, queue: str) -> list[str]:
        out = self.serving().ctl("list_queues", "-q", "--no-table-headers", "name", "members")
        for line in out.splitlines():
            name, _, members = line.partition("\t")
            if name == queue:
                return [m.strip() for m in members.strip().strip("[]").split(",") if m.strip()]
        raise KeyError(queue)

    def node_named(self, name: str) -> OwnRabbit:
        return next(node for node in self.nodes if node.node == name)

    def kill(self, node: OwnRabbit) -> None:
        """SIGKILL the node's Erlang VM: no goodbye to its clients or to the other nodes."""
        pid = int(node.ctl("eval", "os:getpid().").strip().strip('"'))
        os.kill(pid, signal.SIGKILL)

    def cut_off(self, node: OwnRabbit) -> None:
        """Cut `node`'s links to the other nodes: each side refuses the other (a cookie of the
        node's own for them), as when their network splits. Its clients keep their connections
        until the node, finding itself in the minority, pauses."""
        others = ", ".join(f"'{n.node}'" for n in self.nodes if n is not node)
        node.ctl("eval", f"[begin erlang:set_cookie(N, cut_off), erlang:disconnect_node(N) end || N <- [{others}]], ok.")

    def heal(self, node: OwnRabbit) -> None:
        others = ", ".join(f"'{n.node}'" for n in self.nodes if n is not node)
        node.ctl("eval", f"[erlang:set_cookie(N, erlang:get_cookie()) || N <- [{others}]], [net_adm:ping(N) || N <- [{others}]].")

    def wait_all_running(self, timeout: float = 120) -> None:
        """Until every node runs in the cluster, as the first node sees it."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                running = self.nodes[0].ctl("eval", "length(rabbit_mnesia:cluster_nodes(running)).", timeout=15).strip()
                if running == str(len(self.nodes)):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster's nodes not all running after {timeout} s")
            time.sleep(0.5)

    def stop(self) -> None:
        self.proxy.stop()
        for node in reversed(self.nodes):
            node.stop()


def rabbit_cluster(directory: Path, size: int = 3) -> RabbitCluster:
    nodes = [own_rabbit(directory / f"node{i}", CLUSTER_CONFIG) for i in range(1, size + 1)]
    proxy_dir = directory / "haproxy"
    proxy_dir.mkdir(parents=True)
    return RabbitCluster(nodes, HAProxy(proxy_dir, free_port(), [node.port for node in nodes]))


@dataclass
class PostgresPair:
    """A primary and a standby streaming from it synchronously: a transaction is committed, and
    so a message acknowledged, only once the standby has it."""

    primary: OwnPostgres
    standby: OwnPostgres

    @property
    def url(self) -> str:
        """Both servers; a client takes the one that accepts writes."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def start(self) -> None:
        self.primary.start()
        as_user(
            "postgres",
            [
                str(self.standby.bin_dir / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"),
                *("-D", str(self.standby.directory / "data"), "--write-recovery-conf", "--checkpoint=fast"),
            ],
            timeout=120,
        )
        self.standby.serve()
        deadline = time.monotonic() + 60
        while self._replication() != "sync":
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby is not a synchronous standby (state: {self._replication()!r})")
            time.sleep(0.2)

    def _replication(self) -> str:
        psql = [str(self.primary.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"]
        return as_user("postgres", [*psql, "-Atc", "SELECT sync_state FROM pg_stat_replication"], timeout=30).stdout.strip()

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and every backend: the machine is gone."""
        postmaster = int((self.primary.directory / "data" / "postmaster.pid").read_text().split()[0])
        for pid in [postmaster, *_children(postmaster)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def promote(self) -> None:
        """The standby takes over (what an operator, or Patroni, does once the primary is gone)."""
        self.standby.promote()

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid …: the command may hold spaces, so split after its ")".
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
    return found


# The primary waits for the standby to have each commit; the standby, once promoted, serves
# alone until a new standby is attached, so it must not wait for one.
SYNCHRONOUS = "-c synchronous_standby_names=* -c synchronous_commit=on"


def postgres_pair(directory: Path, bin_dir: Path) -> PostgresPair:
    servers = []
    for name, settings in (("primary", SYNCHRONOUS), ("standby", "")):
        (directory / name).mkdir(parents=True)
        chown(directory / name, "postgres")
        servers.append(OwnPostgres(directory / name, free_port(), bin_dir, settings))
    return PostgresPair(*servers)
