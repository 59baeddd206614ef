"""A real Ray cluster on this machine for tests and benchmarks: a head and extra nodes, each a separate raylet.

    with LocalRayCluster(nodes=2) as cluster:
        ... mimic run --executor ray --ray-address cluster.address ...
        cluster.kill_node(1)  # SIGKILL a whole node (its raylet and its workers)

Every node is ``ray start --block`` in its own process group, so killing a node, and stopping
the cluster, ends exactly the processes this cluster started (never another Ray session on the
machine). Its files live in a fresh temporary directory (short: Ray's socket paths must fit in
108 bytes). Health checks run every 0.5 s, so a killed node is noticed within a few seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.errors import UsageError

# How fast the head notices a dead node (Ray's defaults take about 30 s).
_HEALTH_CHECKS = {"RAY_AUTH_MODE": "disabled", "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
                  "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}
_OBJECT_STORE_BYTES = 100_000_000  # the least Ray accepts is about 75 MB; the default takes 30 % of memory


def free_port() -> int:
    """A TCP port on loopback that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRayCluster:
    """``nodes`` Ray nodes of ``cpus_per_node`` CPUs each on this machine; :meth:`start` it, :meth:`stop` it."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, startup_timeout: float = 90.0):
        self.n_nodes, self.cpus_per_node, self.startup_timeout = nodes, cpus_per_node, startup_timeout
        self.temp_dir = Path(tempfile.mkdtemp(prefix="mray", dir="/tmp"))
        self.port = free_port()
        self.nodes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        """The head's GCS address, as ``--ray-address`` takes it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalRayCluster:
        """Start the head and the other nodes; return once all are alive."""
        self._node(["--head", f"--port={self.port}", "--include-dashboard=false"])
        self._wait(1)
        for _ in range(self.n_nodes - 1):
            self.add_node()
        self._wait(self.n_nodes)
        return self

    def add_node(self) -> None:
        """Start one more node that joins the head (``ray start --address HEAD``)."""
        self._node([f"--address={self.address}"])

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` (0 is the head): its raylet and every worker process on it."""
        process = self.nodes[index]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def alive_nodes(self) -> int:
        """How many nodes the head counts as alive."""
        import ray

        connected = ray.is_initialized()
        if not connected:
            ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
        try:
            return sum(1 for node in ray.nodes() if node.get("Alive"))
        finally:
            if not connected:
                ray.shutdown()

    def stop(self) -> None:
        """End every node's process group (SIGTERM, then SIGKILL) and remove the temporary directory."""
        for process in reversed(self.nodes):
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for process in self.nodes:
            try:  # the raylet and its workers outlive `ray start` for a moment after SIGTERM
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _node(self, role: list[str]) -> None:
        ray_cli = Path(sys.executable).parent / "ray"
        args = [str(ray_cli), "start", *role, f"--num-cpus={self.cpus_per_node}", "--node-ip-address=127.0.0.1",
                f"--temp-dir={self.temp_dir}", f"--object-store-memory={_OBJECT_STORE_BYTES}", "--disable-usage-stats",
                f"--dashboard-agent-listen-port={free_port()}", "--block"]
        log = open(self.temp_dir / f"node{len(self.nodes)}.log", "wb")  # noqa: SIM115 - the child keeps it open
        try:
            self.nodes.append(subprocess.Popen(args, env={**os.environ, **_HEALTH_CHECKS}, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))
        finally:
            log.close()

    def _wait(self, nodes: int) -> None:
        """Wait until ``ray status`` answers (a failed ``ray.init`` against a GCS still starting leaves this
        process unable to connect later), then until the head counts ``nodes`` alive."""
        deadline = time.monotonic() + self.startup_timeout
        ray_cli = str(Path(sys.executable).parent / "ray")
        while time.monotonic() < deadline and all(p.poll() is None for p in self.nodes):
            status = subprocess.run([ray_cli, "status", f"--address={self.address}"], capture_output=True, text=True,
                                    timeout=self.startup_timeout)
            if status.returncode == 0 and self.alive_nodes() >= nodes:
                return
            time.sleep(0.5)
        logs = " | ".join(p.read_text(errors="replace").strip().splitlines()[-1] for p in sorted(self.temp_dir.glob("node*.log"))
                          if p.read_text(errors="replace").strip())
        raise UsageError(f"the local Ray cluster did not reach {nodes} node(s) in {self.startup_timeout:.0f} s: {logs}",
                         f"see the node logs in {self.temp_dir}")
