"""What the exporters probe, all on 127.0.0.1: nginx (tiny static answers, optionally TLS) and
the 100 ms server. Also the two exporters' configs, kept side by side so they stay equivalent."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Proc, Procs, free_port, wait_http, wait_tcp

NGINX_BODY = "ok\n"
ROOT = Path(__file__).resolve().parent.parent  # the project: bench and exporter import from here


@dataclass
class Nginx:
    proc: Proc
    port: int  # plain HTTP: / answers 200 "ok", /generate_204 answers 204
    extra_ports: list[int] = field(default_factory=list)  # more plain listeners (tcp targets)
    tls_port: int | None = None
    ca_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def start_nginx(procs: Procs, extra_listeners: int = 0, tls: bool = False) -> Nginx:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    work = procs.workdir / "nginx"
    work.mkdir(exist_ok=True)
    port = free_port()
    extra = [free_port() for _ in range(extra_listeners)]
    tls_port = free_port() if tls else None
    ca_file = None
    tls_server = ""
    if tls_port is not None:
        ca_file, cert, key = _certificates(work)
        tls_server = f"""
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = /generate_204 {{ return 204; }}
        location / {{ return 200 "{NGINX_BODY}"; }}
    }}"""
    listens = "\n".join(f"        listen 127.0.0.1:{p};" for p in [port, *extra])
    conf = work / "nginx.conf"
    conf.write_text(f"""\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    default_type text/plain;
    keepalive_requests 100000;
    server {{
{listens}
        location = /generate_204 {{ return 204; }}
        location / {{ return 200 "{NGINX_BODY}"; }}
    }}{tls_server}
}}
""")
    proc = procs.start("nginx", [binary, "-c", str(conf), "-p", str(work), "-e", str(work / "error.log")])
    wait_http(f"http://127.0.0.1:{port}/", proc)
    for p in extra:
        wait_tcp(p, proc)
    return Nginx(proc, port, extra, tls_port, ca_file)


def _certificates(work: Path) -> tuple[Path, Path, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert_file, key_file = work / "ca.pem", work / "cert.pem", work / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with cert_file.open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return ca_file, cert_file, key_file


def start_slow(procs: Procs) -> tuple[Proc, str]:
    port = free_port()
    proc = procs.start("slow-target", [sys.executable, "-m", "bench.slowserver", str(port)],
                       env={"PYTHONPATH": str(ROOT)})
    wait_tcp(port, proc)
    return proc, f"http://127.0.0.1:{port}/"


# -- blackbox_exporter ---------------------------------------------------------------------------

BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
  tcp_connect:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
  icmp:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
"""

# The same three modules for our /probe: one ICMP packet per probe, as blackbox sends.
OUR_MODULES = """\
modules:
  http_2xx: {kind: http, timeout: 5s, allowed_targets: ["http://127.0.0.1:*"]}
  tcp_connect: {kind: tcp, timeout: 5s, allowed_targets: ["127.0.0.1:*"]}
  icmp: {kind: icmp, timeout: 5s, packets: 1, allowed_targets: ["127.0.0.1"]}
"""


def blackbox_binary() -> str | None:
    return shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")


def start_blackbox(procs: Procs, name: str = "blackbox") -> tuple[Proc, str]:
    binary = blackbox_binary()
    if binary is None:
        raise RuntimeError("prometheus-blackbox-exporter is not installed (scripts/apt-packages.txt)")
    conf = procs.workdir / "blackbox.yml"
    conf.write_text(BLACKBOX_CONFIG)
    port = free_port()
    proc = procs.start(name, [binary, f"--config.file={conf}", f"--web.listen-address=127.0.0.1:{port}",
                              "--log.level=warn"])
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/healthy", proc)
    return proc, url


# -- our exporter ----------------------------------------------------------------------------------


def exporter_argv() -> list[str]:
    script = Path(sys.executable).parent / "claude-status-exporter"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "exporter"]


def start_ours(procs: Procs, config_text: str | None, name: str = "ours",
               wait: str | None = "/-/healthy", prefix: tuple[str, ...] = (),
               command: tuple[str, ...] = (), timeout: float = 60.0,
               extra: tuple[str, ...] = ()) -> tuple[Proc, str]:
    """Our exporter on a free loopback port; ``config_text=None`` runs the bundled preset
    (only ever inside a network namespace without links), ``command`` replaces the console
    script, ``prefix`` goes before it (``ip netns exec NS``),
    ``extra`` are more flags (e.g. ``--runtime.event-loop=asyncio``)."""
    if config_text is None and list(prefix[:3]) != ["ip", "netns", "exec"]:
        raise ValueError("the bundled preset reaches the internet: run it only in a namespace")
    port = free_port()
    argv = [*prefix, *(command or exporter_argv()), f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn", *extra]
    if config_text is not None:
        conf = procs.workdir / f"{name}.yml"
        conf.write_text(config_text)
        argv.append(f"--config.file={conf}")
    proc = procs.start(name, argv, env={"PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    if wait:
        wait_http(url + wait, proc, timeout=timeout)
    return proc, url


def background_checks(count: int, nginx: Nginx, interval: str = "15s", timeout: str = "5s",
                      http_share: float = 0.0) -> str:
    """``count`` checks spread over nginx's listeners: tcp, and http for ``http_share`` of them."""
    ports = [nginx.port, *nginx.extra_ports]
    n_http = int(count * http_share)
    lines = [f"defaults: {{interval: {interval}, timeout: {timeout}}}", "upstreams:", "  bench:",
             "    checks:"]
    for i in range(count):
        port = ports[i % len(ports)]
        if i < n_http:
            lines.append(f'      - {{name: h{i}, kind: http, url: "http://127.0.0.1:{port}/"}}')
        else:
            lines.append(f'      - {{name: t{i}, kind: tcp, target: "127.0.0.1:{port}"}}')
    return "\n".join(lines) + "\n"
