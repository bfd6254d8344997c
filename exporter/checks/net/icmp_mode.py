"""Which kind of ICMP socket this process may open, found once at startup.

- ``privileged``: a raw socket (root, or CAP_NET_RAW on the process); icmplib builds the
  whole echo request.
- ``unprivileged``: a datagram ICMP socket, which Linux allows when the process's group is
  inside ``net.ipv4.ping_group_range``; no capability needed.
- ``none``: neither; icmp checks then fail with reason ``permission``.

Raw is tried first, as it works whenever it is allowed. ``detect()`` opens and closes one
IPv4 socket of each kind at most and caches the answer, so calling it per scrape is free.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from icmplib import ICMPSocketError, ICMPv4Socket, SocketPermissionError

Mode = Literal["privileged", "unprivileged", "none"]

log = logging.getLogger("exporter.icmp")

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
HELP_NONE = (
    "ICMP checks will fail with reason permission: this process may open neither a raw ICMP "
    "socket (needs root or CAP_NET_RAW) nor an unprivileged one (needs its group inside "
    "net.ipv4.ping_group_range{current}). Fix one of them, e.g. "
    'sysctl -w net.ipv4.ping_group_range="0 2147483647"; in Docker '
    '--sysctl net.ipv4.ping_group_range="0 2147483647", in Kubernetes the pod\'s '
    "securityContext.sysctls (see docs/network.md).")

_cached: Mode | None = None


def _can_open(privileged: bool) -> bool:
    """Whether icmplib may open an IPv4 socket of this kind here (the one the probes use)."""
    try:
        ICMPv4Socket(privileged=privileged).close()
    except SocketPermissionError:
        return False
    except ICMPSocketError as exc:  # e.g. no IPv4 ICMP support at all
        log.debug("cannot open an ICMP socket: %s", exc)
        return False
    return True


def probe_modes() -> Mode:
    """Try the socket kinds now, without the cache."""
    if _can_open(privileged=True):
        return "privileged"
    if _can_open(privileged=False):
        return "unprivileged"
    return "none"


def detect(refresh: bool = False) -> Mode:
    """The ICMP mode, detected on first use (or when ``refresh``) and logged once."""
    global _cached
    if _cached is None or refresh:
        mode = probe_modes()
        if mode != _cached:
            if mode == "none":
                log.warning(message())
            else:
                log.info("ICMP checks use %s sockets", mode, extra={"icmp_mode": mode})
        _cached = mode
    return _cached


def message() -> str:
    """Why ICMP does not work here, for the startup log and the checks' error text."""
    try:
        current = PING_GROUP_RANGE.read_text().split()
        shown = f', now "{current[0]} {current[1]}"' if len(current) == 2 else ""
    except OSError:
        shown = ""
    return HELP_NONE.format(current=shown)
