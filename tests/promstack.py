"""A real Prometheus, a real Alertmanager and a webhook receiver, all on loopback, for tests.

Each runs with its own storage under the test's tmp directory and a free 127.0.0.1 port, and
logs to a file there, which the failure messages quote. Use them as context managers so the
processes stop however the test ends.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import yaml
from conftest import free_port, require_binary

T = TypeVar("T")

JOB = "claude-status-exporter"  # the job name the alert rules select


def wait_until(fetch: Callable[[], T | None], timeout: float, what: str,
               interval: float = 0.2) -> T:
    """Call ``fetch`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _request(url: str, data: bytes | None = None, method: str | None = None,
             timeout: float = 10.0) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _Process:
    """A server subprocess on a loopback port, stopped on exit, its log kept in a file."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, ready_timeout: float = 30.0) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                     f"{self.log()}")
            try:
                if _request(self.url + "/-/ready", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{self.name} not ready in {ready_timeout}s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def __enter__(self: Any) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Prometheus(_Process):
    """Prometheus 2.42 scraping ``targets`` as job claude-status-exporter."""

    name = "prometheus"

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path] = (),  # type: ignore[assignment]
                 alertmanager: str | None = None, scrape_interval: str = "1s",
                 evaluation_interval: str = "1s", listen_host: str = "127.0.0.1",
                 extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(workdir)
        self.listen_host = listen_host  # 0.0.0.0 for a central one that test hosts write to
        self.extra_args = extra_args
        self.binary = require_binary("prometheus")
        config: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "evaluation_interval": evaluation_interval},
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
            "rule_files": [str(p) for p in rule_files],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [alertmanager.removeprefix("http://")]}]}]}
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))

    def command(self) -> list[str]:
        return [self.binary, f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.listen_host}:{self.port}",
                "--storage.tsdb.retention.time=1d", "--log.level=warn", *self.extra_args]

    def api(self, path: str, **params: str) -> Any:
        status, body = _request(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        payload = json.loads(body)
        if status != 200 or payload.get("status") != "success":
            raise AssertionError(f"/api/v1/{path} {params} -> {status}: {body[:500]!r}")
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the vector (or a one-element list for a scalar)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, seconds: float, step: str = "1s") -> list[dict[str, Any]]:
        end = time.time()
        data = self.api("query_range", query=expr, start=str(end - seconds), end=str(end),
                        step=step)
        return list(data["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.api(f"label/{label}/values", **{"match[]": match}))

    def firing(self, alertname: str) -> list[dict[str, str]]:
        return [r["metric"] for r in
                self.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')]

    def wait_for_data(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        return wait_until(lambda: self.query(expr), timeout, f"data for {expr}")


class Alertmanager(_Process):
    """Alertmanager 0.25 with the given configuration text, clustering off."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config_text: str) -> None:
        super().__init__(workdir)
        self.binary = require_binary("prometheus-alertmanager")
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(config_text)

    def command(self) -> list[str]:
        return [self.binary, f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=", "--log.level=warn"]

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        status, body = _request(self.url + "/api/v2/alerts", json.dumps(alerts).encode(),
                                method="POST")
        assert status == 200, body

    def alerts(self) -> list[dict[str, Any]]:
        status, body = _request(self.url + "/api/v2/alerts")
        assert status == 200, body
        return list(json.loads(body))


@dataclass
class Delivery:
    at: float  # time.monotonic() on arrival
    path: str
    payload: dict[str, Any]

    def alerts(self, status: str = "firing") -> list[dict[str, Any]]:
        return [a for a in self.payload.get("alerts", []) if a.get("status") == status]


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every Alertmanager webhook it receives."""

    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    receiver.deliveries.append(
                        Delivery(time.monotonic(), self.path, json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def first(self, path: str, alertname: str, status: str = "firing",
              after: float = 0.0) -> Delivery | None:
        for d in list(self.deliveries):
            if d.path == path and d.at >= after and any(
                    a["labels"].get("alertname") == alertname for a in d.alerts(status)):
                return d
        return None


# -- rule and config rewriting for fast end-to-end runs ------------------------------------------

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    parts = _DURATION.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * _UNIT[u] for n, u in parts)


def scaled_rules(src: Path, dst: Path, divisor: int) -> Path:
    """Copy a rule file with every ``for:`` divided by ``divisor`` (60: minutes become seconds).

    Only the hold times change; expressions, thresholds and windows stay as shipped.
    """
    doc = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{max(1, round(seconds(rule['for']) * 1000 / divisor))}ms"
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def rules_evaluated_every(src: Path, dst: Path, interval: str) -> Path:
    """Copy a rule file with every group evaluated every ``interval``: the 5-minute groups
    would otherwise give a test no recorded sample for minutes."""
    doc = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        group["interval"] = interval
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def recorded_series_names(paths: list[Path]) -> set[str]:
    """Every series the recording rules in ``paths`` record."""
    return {rule["record"] for path in paths
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


def alertmanager_config_for_test(example: str, webhook_url: str, group_wait: str | None = "1s",
                                 group_interval: str = "1s") -> str:
    """The example configuration with its receivers pointed at ``webhook_url``/<receiver>
    and short grouping timers (``group_wait=None``: the shipped timers); routes and
    inhibitions stay as shipped."""
    doc = yaml.safe_load(example)
    for route in [doc["route"], *doc["route"].get("routes", [])] if group_wait else []:
        if route is doc["route"] or "group_wait" in route:
            route["group_wait"] = group_wait
        if route is doc["route"] or "group_interval" in route:
            route["group_interval"] = group_interval
    for receiver in doc["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook_url}/{receiver['name']}"
    return yaml.safe_dump(doc, sort_keys=False)


# -- PromQL helpers shared by the rule and dashboard tests ---------------------------------------

def children(node: Any) -> list[Any]:
    """The sub-expressions of a promql_parser node."""
    found = [getattr(node, a, None) for a in ("expr", "lhs", "rhs", "param",
                                                "vector_selector")]
    found.extend(getattr(node, "args", None) or ())
    return [c for c in found if c is not None and not isinstance(c, (str, float, int))]


def selector_names(node: Any) -> set[str]:
    """Metric names of every selector in a parsed PromQL expression."""
    name = getattr(node, "name", None) if type(node).__name__ == "VectorSelector" else None
    names = {name} if name else set()
    for child in children(node):
        names |= selector_names(child)
    return names


def bare_counters(node: Any, inside_rate: bool = False) -> set[str]:
    """Counters and histogram buckets read without rate(), irate() or increase() around
    them: their raw values are meaningless on a graph."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        name = node.name or ""
        cumulative = name.endswith(("_total", "_bucket", "_count", "_sum"))
        return {name} if cumulative and not inside_rate else set()
    rate = kind == "Call" and str(node.func.name) in ("rate", "irate", "increase")
    if kind == "MatrixSelector":
        return bare_counters(node.vector_selector, inside_rate)
    found: set[str] = set()
    for child in children(node):
        found |= bare_counters(child, rate if kind == "Call" else inside_rate)
    return found


def exported_series_names() -> set[str]:
    """Every series name the exporter can serve (histograms with their suffixes), plus `up`."""
    from exporter import metrics

    names = {"up"}
    for spec in metrics.all_specs():
        if spec.type == "histogram":
            names |= {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"}
        else:
            names.add(spec.name)
    return names
