"""One shared ICMP socket per process, event loop and address family.

Every raw ICMP socket on a host receives a copy of every ICMP packet, so a socket per probe
means each probe parses every other probe's traffic. Here all probes of a process share one
socket per family, registered once with the event loop; one callback drains everything queued
on each wakeup and hands each reply to the probe waiting on its sequence number.

- Raw sockets (``privileged``): we build the echo request ourselves with this process's
  random identifier. A classic BPF filter keeps only echo replies carrying that identifier
  plus destination-unreachable and time-exceeded errors, so the kernel drops our own requests
  (seen on loopback), other processes' pings and unrelated ICMP before Python sees them.
- Datagram ping sockets (``unprivileged``): the kernel sets the identifier to the socket's
  port and delivers only the replies to it, so sequence numbers alone tell probes apart. ICMP
  errors come through the socket's error queue (IP_RECVERR).

Sequence numbers count up, wrap at 65536 and skip numbers still in flight. Each request's
first payload bytes are a per-request token, and a reply must echo the whole payload back, so
a late reply to an earlier use of the same sequence number is not taken for a new one.

Arrival times come from the kernel (SO_TIMESTAMPNS), so a round trip stays exact even when
the event loop was busy when the reply arrived; the send time is read right before sendto.

The socket is opened on first use and kept. If it fails, every request in flight on it is
failed with the error and the next request opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import random
import socket
import struct
import time
from typing import TypeAlias

# Linux constants the socket module does not export (asm-generic values; x86, arm, riscv).
SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3

# (echo request, echo reply, (destination unreachable, time exceeded)) per family
TYPES: dict[int, tuple[int, int, tuple[int, int]]] = {
    socket.AF_INET: (8, 0, (3, 11)), socket.AF_INET6: (128, 129, (1, 3))}

RECV_SIZE = 4096  # a reply (payload <= 1400) or an error quoting our request
ANC_SIZE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(16 + 28)  # timestamp; extended error
RCVBUF = 1 << 20  # room for a few thousand replies arriving at once
FILLER = bytes(0x20 + i % 0x5F for i in range(1400))  # printable, like ping's pattern
_TIMESTAMP = struct.Struct("qq")
_HEADER = struct.Struct("!BBHHH")
_ID_SEQ = struct.Struct("!HH")
_EXT_ERR = struct.Struct("=IBBBBII")


class Echo:
    """One probe run's requests: what went out, what came back, who waits."""

    __slots__ = ("all_sent", "errors", "outstanding", "rtts", "sent", "sequences", "waiter")

    def __init__(self) -> None:
        self.sent = 0
        self.rtts: list[float] = []
        self.errors: list[str] = []
        self.outstanding = 0
        self.all_sent = False
        self.waiter: asyncio.Future[None] | None = None
        self.sequences: list[int] = []

    def settle(self) -> None:
        """One request is answered (or failed): wake the waiter once none is left."""
        self.outstanding -= 1
        if self.all_sent and self.outstanding <= 0:
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


# sequence -> (run, index of the request within its run, payload, send time in ns)
Pending: TypeAlias = dict[int, tuple[Echo, int, bytes, int]]


def _checksum(data: bytes) -> int:
    """The Internet checksum, in native byte order (RFC 1071: the sum is order-independent)."""
    if len(data) & 1:
        data += b"\0"
    total = sum(memoryview(data).cast("H"))
    total = (total & 0xFFFF) + (total >> 16)
    total += total >> 16
    return ~total & 0xFFFF


def _bpf(program: list[tuple[int, int, int, int]]) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """A struct sock_fprog for SO_ATTACH_FILTER, and the buffer it points to (keep it alive
    until setsockopt returns; the kernel copies it)."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    return struct.pack("HL", len(program), ctypes.addressof(code)), code


def _reply_filter(family: int, ident: int) -> list[tuple[int, int, int, int]]:
    accept, drop = (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)
    if family == socket.AF_INET:  # raw IPv4 sockets see the IP header first
        return [
            (0xB1, 0, 0, 0),          # X = IP header length
            (0x50, 0, 0, 0),          # A = ICMP type
            (0x15, 0, 2, 0),          # echo reply? else to the error types
            (0x48, 0, 0, 4),          # A = identifier
            (0x15, 2, 3, ident),      # ours: accept, else drop
            (0x15, 1, 0, 3),          # destination unreachable: accept
            (0x15, 0, 1, 11),         # time exceeded: accept, else drop
            accept, drop]
    return [  # raw ICMPv6 sockets see the ICMPv6 header first
        (0x30, 0, 0, 0),
        (0x15, 0, 2, 129),
        (0x28, 0, 0, 4),
        (0x15, 2, 3, ident),
        (0x15, 1, 0, 1),
        (0x15, 0, 1, 3),
        accept, drop]


class Channel:
    """The shared socket of one family on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, family: int, privileged: bool) -> None:
        self.loop = loop
        self.family = family
        self.privileged = privileged
        self.request_type, self.reply_type, self.error_types = TYPES[family]
        self.ident = random.getrandbits(16)  # raw only; the kernel picks it for ping sockets
        self.sequence = random.getrandbits(16)
        self.token = random.getrandbits(64)
        self.pending: Pending = {}
        self.closed = False
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        sock = socket.socket(family, socket.SOCK_RAW if privileged else socket.SOCK_DGRAM, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:  # needs CAP_NET_ADMIN; the plain option is capped by rmem_max
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            if privileged:
                fprog, code = _bpf(_reply_filter(family, self.ident))
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
                del code
            elif family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        # Raw IPv4 sockets return the IP header (variable length) before the ICMP message.
        self.offset_known = not (privileged and family == socket.AF_INET)

    # -- sending -------------------------------------------------------------------------------

    def _next_sequence(self) -> int:
        pending = self.pending
        if len(pending) >= 65536:
            raise OSError(errno.ENOBUFS, "65536 ICMP echo requests already in flight")
        sequence = (self.sequence + 1) & 0xFFFF
        while sequence in pending:
            sequence = (sequence + 1) & 0xFFFF
        self.sequence = sequence
        return sequence

    def send(self, run: Echo, index: int, address: str, payload_size: int) -> None:
        """Send request ``index`` of ``run``; raises OSError when the kernel refuses it."""
        sequence = self._next_sequence()
        self.token = token = (self.token + 1) & 0xFFFFFFFFFFFFFFFF
        payload = (token.to_bytes(8, "big") + FILLER[8:payload_size])[:payload_size]
        packet = _HEADER.pack(self.request_type, 0, 0, self.ident, sequence) + payload
        if self.privileged and self.family == socket.AF_INET:
            # Raw IPv6 and ping sockets get their checksum from the kernel.
            packet = packet[:2] + struct.pack("=H", _checksum(packet)) + packet[4:]
        sent_ns = time.time_ns()
        self.sock.sendto(packet, (address, 0))
        self.pending[sequence] = (run, index, payload, sent_ns)
        run.sequences.append(sequence)
        run.outstanding += 1

    def release(self, run: Echo) -> None:
        """Forget ``run``'s unanswered requests; their sequence numbers may be reused."""
        pending = self.pending
        for sequence in run.sequences:
            entry = pending.get(sequence)
            if entry is not None and entry[0] is run:
                del pending[sequence]
        run.sequences.clear()

    # -- receiving -----------------------------------------------------------------------------

    def _readable(self) -> None:
        recvmsg = self.sock.recvmsg
        while True:
            try:
                data, ancdata, _flags, _address = recvmsg(RECV_SIZE, ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if not self.privileged and exc.errno in _ICMP_ERRNOS:
                    self._read_errors()  # a ping socket's ICMP error; details are queued
                    continue
                self.fail(exc)
                return
            arrived = 0
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESTAMP.unpack(value)
                    arrived = seconds * 1_000_000_000 + nanoseconds
            self._packet(data, arrived or time.time_ns())

    def _packet(self, data: bytes, arrived: int) -> None:
        offset = 0 if self.offset_known else (data[0] & 0x0F) * 4 if data else 0
        if len(data) < offset + 8:
            return
        kind = data[offset]
        if kind == self.reply_type:
            ident, sequence = _ID_SEQ.unpack_from(data, offset + 4)
            if self.privileged and ident != self.ident:
                return
            entry = self.pending.get(sequence)
            if entry is None or data[offset + 8:] != entry[2]:
                return  # not in flight, or a late reply to an earlier use of the number
            del self.pending[sequence]
            run = entry[0]
            run.rtts.append(max(0.0, (arrived - entry[3]) / 1e9))
            run.settle()
        elif self.privileged and kind in self.error_types:
            self._raw_error(data, offset, kind, data[offset + 1])

    def _raw_error(self, data: bytes, offset: int, kind: int, code: int) -> None:
        """An ICMP error quoting the request it is about (after its own 8-byte header)."""
        inner = offset + 8
        if self.family == socket.AF_INET:
            if len(data) < inner + 20 or data[inner + 9] != socket.IPPROTO_ICMP:
                return
            inner += (data[inner] & 0x0F) * 4
        else:
            if len(data) < inner + 40 or data[inner + 6] != socket.IPPROTO_ICMPV6:
                return
            inner += 40
        if len(data) < inner + 8 or data[inner] != self.request_type:
            return
        ident, sequence = _ID_SEQ.unpack_from(data, inner + 4)
        if ident == self.ident:
            self._error(sequence, data[inner + 8:], kind, code)

    def _read_errors(self) -> None:
        """Drain a ping socket's error queue: each entry quotes our request's ICMP header."""
        while True:
            try:
                data, ancdata, _flags, _address = self.sock.recvmsg(RECV_SIZE, ANC_SIZE,
                                                                    MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.fail(exc)
                return
            for level, kind, value in ancdata:
                if (level in (socket.IPPROTO_IP, socket.IPPROTO_IPV6)
                        and kind in (IP_RECVERR, IPV6_RECVERR) and len(value) >= 16):
                    _errno, origin, icmp_type, icmp_code, _pad, _info, _data = \
                        _EXT_ERR.unpack_from(value)
                    if origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6) and len(data) >= 8 \
                            and data[0] == self.request_type:
                        self._error(_ID_SEQ.unpack_from(data, 4)[1], data[8:], icmp_type,
                                    icmp_code)

    def _error(self, sequence: int, quoted: bytes, kind: int, code: int) -> None:
        entry = self.pending.get(sequence)
        # The quote may be cut short, but what there is must be our payload.
        if entry is None or not entry[2].startswith(quoted[:len(entry[2])]):
            return
        del self.pending[sequence]
        run, index = entry[0], entry[1]
        run.errors.append(f"ICMP type {kind} code {code} for request {index}")
        run.settle()

    def fail(self, exc: OSError) -> None:
        """The socket is unusable: fail every request in flight and close it."""
        self.close()
        message = str(exc) or exc.__class__.__name__
        pending, self.pending = self.pending, {}
        for run, _index, _payload, _sent in pending.values():
            run.errors.append(message)
            run.settle()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # the loop may be closed already
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


_ICMP_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                          errno.EHOSTDOWN, errno.ENETDOWN, errno.EPROTO, errno.EMSGSIZE,
                          errno.ENOPROTOOPT, errno.EACCES, errno.EPERM})

_channels: dict[tuple[int, bool], Channel] = {}


def channel(family: int, privileged: bool) -> Channel:
    """The running loop's shared socket for ``family``, opened now if needed. Raises OSError
    (PermissionError when not allowed) when it cannot be opened."""
    loop = asyncio.get_running_loop()
    key = (family, privileged)
    current = _channels.get(key)
    if current is not None and not current.closed and current.loop is loop:
        return current
    if current is not None:
        current.close()  # closed by an error, or left by an earlier event loop
        del _channels[key]
    opened = Channel(loop, family, privileged)
    _channels[key] = opened
    return opened
