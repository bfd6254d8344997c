"""kind: icmp. Send ``packets`` echo requests ``packet_interval`` apart and count the replies.

Requests go out on a fixed schedule while replies are read as they come, so a lost packet
does not delay the next one (unlike ping's one-at-a-time loop). Replies are collected until
every request is answered, or ``REPLY_WAIT`` seconds after the last request, or the check's
timeout, whichever comes first; later replies count as lost. A request the kernel refuses to
send (no route, for instance) counts as sent and lost, so loss = 1 - received / sent holds.

Every run adds to probe_icmp_packets_sent_total and probe_icmp_packets_received_total and
observes each reply's round trip in probe_icmp_rtt_seconds; loss and quantiles over any
window come from PromQL. A run succeeds when at least one reply arrived.

The socket kind (raw or unprivileged datagram) is the one exporter.icmp_mode detected. All
probes of a process share one socket per address family (exporter.checks.icmpsock), which
matches each reply to its request; round trips are timed by the kernel's arrival stamp.

Failure reasons: dns (the name does not resolve), timeout (the lookup took the whole
timeout), loss (no reply to any request), unreachable (no reply, and the network said so:
no route, or an ICMP destination unreachable), permission (no ICMP socket may be opened).
"""

from __future__ import annotations

import asyncio
import socket
import time

from exporter import icmp_mode
from exporter import metrics as m
from exporter.checks import ProbeContext, Result, Sample, failure
from exporter.checks.icmpsock import Echo, channel
from exporter.checks.resolve import ResolveError, address_hash, budget, ip_version, resolve
from exporter.config import CheckConfig

REASONS = ("dns", "timeout", "loss", "unreachable", "permission")
REPLY_WAIT = 2.0  # seconds to wait for replies after the last request


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def ping(address: str, count: int, interval: float, payload_size: int,
               privileged: bool, deadline: float) -> Echo:
    """Run the echo exchange on the process's shared socket; ``deadline`` is on the loop
    clock. Raises OSError (PermissionError when not allowed) only when the socket cannot be
    opened."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ip_version(address) == 6 else socket.AF_INET
    sock = channel(family, privileged)
    run = Echo()
    try:
        first = loop.time()
        for index in range(count):
            send_at = first + index * interval
            if send_at > deadline:
                break
            if send_at > loop.time():
                await asyncio.sleep(send_at - loop.time())
                if sock.closed:  # failed while we slept: carry on with a new one
                    sock = channel(family, privileged)
            run.sent += 1
            try:
                sock.send(run, index, address, payload_size)
            except OSError as exc:
                run.errors.append(str(exc) or exc.__class__.__name__)
        run.all_sent = True
        if run.outstanding > 0:
            waiter = run.waiter = loop.create_future()
            timer = loop.call_at(min(deadline, loop.time() + REPLY_WAIT), _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
    finally:
        sock.release(run)
    return run


async def probe(check: CheckConfig, ctx: ProbeContext) -> Result:
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget(check)
    zero = (Sample(m.PROBE_ICMP_SENT, 0.0), Sample(m.PROBE_ICMP_RECEIVED, 0.0))
    mode = icmp_mode.detect()
    if mode == "none":
        message = icmp_mode.message()
        ctx.log(message)
        return failure(start, "permission", message, counters=zero)
    assert check.target is not None, "the config requires a target"
    try:
        async with asyncio.timeout(max(0.0, deadline - loop.time())):
            resolved = await resolve(check.target, check.ip_protocol)
    except ResolveError as exc:
        ctx.log(str(exc))
        return failure(start, "dns", str(exc), counters=zero)
    except TimeoutError:
        message = f"DNS lookup of {check.target} timed out"
        ctx.log(message)
        return failure(start, "timeout", message, counters=zero)
    address = resolved.addresses[0]
    gauges = (Sample(m.PROBE_DNS_LOOKUP_TIME, resolved.seconds),
              Sample(m.PROBE_IP_ADDR_HASH, address_hash(resolved.addresses)),
              Sample(m.PROBE_IP_PROTOCOL, float(ip_version(address))))
    ctx.log(f"pinging {check.target} ({address}) with {check.packets} packets "
            f"{check.packet_interval:g}s apart, {mode} socket")
    try:
        result = await ping(address, check.packets, check.packet_interval, check.payload_size,
                            mode == "privileged", deadline)
    except PermissionError:
        message = (f"not allowed to open a {mode} ICMPv{ip_version(address)} socket; "
                   + icmp_mode.message())
        ctx.log(message)
        return failure(start, "permission", message, gauges=gauges, counters=zero)
    except OSError as exc:
        message = f"cannot open an ICMP socket: {exc}"
        ctx.log(message)
        return failure(start, "unreachable", message, gauges=gauges, counters=zero)

    received = len(result.rtts)
    counters = (Sample(m.PROBE_ICMP_SENT, float(result.sent)),
                Sample(m.PROBE_ICMP_RECEIVED, float(received)))
    observations = tuple(Sample(m.PROBE_ICMP_RTT, rtt) for rtt in result.rtts)
    details = {"address": address, "packets_sent": result.sent, "packets_received": received,
               "mode": mode}
    summary = f"{received} of {result.sent} replies from {address}"
    if result.rtts:
        summary += (f", rtt min/avg/max {min(result.rtts) * 1000:.3f}/"
                    f"{sum(result.rtts) / received * 1000:.3f}/{max(result.rtts) * 1000:.3f} ms")
    if result.sent < check.packets:
        summary += f"; the timeout left time for only {result.sent} of {check.packets} requests"
    ctx.log(summary)
    for error in dict.fromkeys(result.errors):
        ctx.log(f"error: {error}")
    if received:
        return Result(True, time.perf_counter() - start, gauges=gauges, counters=counters,
                      observations=observations, details=details)
    reason = "unreachable" if result.errors else "loss"
    error = f"no reply to {result.sent} echo requests to {address}"
    if result.errors:
        error += f": {result.errors[0]}"
    return failure(start, reason, error, gauges=gauges, counters=counters, details=details)
