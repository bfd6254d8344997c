"""An incremental server-sent events parser (the WHATWG event-stream rules), without I/O.

Feed it the bytes of a ``text/event-stream`` body in whatever chunks the network delivers;
it returns the events completed by each chunk. Lines may end in CR, LF or CRLF, and a CRLF
may be split across two chunks. Comment lines (``:`` first) are skipped, several ``data:``
lines join with ``\\n``, one space after the colon is dropped. A line longer than
``max_line`` bytes raises ``SSEError`` so a broken server cannot grow the buffer forever.

    >>> p = SSEParser()
    >>> p.feed(b"event: ping\\r\\ndata: {}\\r")
    []
    >>> p.feed(b"\\n\\r\\n")
    [Event(event='ping', data='{}', id=None)]
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """The stream is not a usable event stream (for example, a line without an end)."""


@dataclass(frozen=True)
class Event:
    event: str  # "message" when the stream named none
    data: str
    id: str | None = None


class SSEParser:
    def __init__(self, max_line: int = 1 << 20) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skip_lf = False  # the previous chunk ended in CR; a leading LF belongs to it
        self._started = False  # a UTF-8 byte order mark is dropped only at the very start
        self._event = ""
        self._data: list[str] = []
        self._last_id: str | None = None
        self._fields_seen = False

    @property
    def pending(self) -> bool:
        """True while a line or an event has started but not ended (a cut stream)."""
        return bool(self._buffer) or self._fields_seen

    def feed(self, chunk: bytes) -> list[Event]:
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer
        buffer += chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(bytes(buffer)):
                return []
            self._started = True
            if buffer.startswith(_BOM):
                del buffer[: len(_BOM)]
        events: list[Event] = []
        start = 0
        end = len(buffer)
        while start < end:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                self._line(bytes(buffer[start:lf]), events)
                start = lf + 1
                continue
            self._line(bytes(buffer[start:cr]), events)
            if cr + 1 < end:
                start = cr + 2 if buffer[cr + 1] == 0x0A else cr + 1
            else:
                start = cr + 1
                self._skip_lf = True
        del buffer[:start]
        if len(buffer) > self.max_line:
            raise SSEError(f"event-stream line longer than {self.max_line} bytes")
        return events

    def _line(self, raw: bytes, events: list[Event]) -> None:
        if not raw:
            self._dispatch(events)
            return
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        else:
            return  # "retry" and unknown fields do not concern a probe
        self._fields_seen = True

    def _dispatch(self, events: list[Event]) -> None:
        if self._data:
            events.append(Event(self._event or "message", "\n".join(self._data), self._last_id))
        self._event = ""
        self._data = []
        self._fields_seen = False
