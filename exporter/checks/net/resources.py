"""Running out of our own resources is ours, not the target's.

At the file-descriptor limit (``ulimit -n``) every socket() and accept() fails with EMFILE
(ENFILE for the whole system); out of buffers or memory, ENOBUFS and ENOMEM. A probe that
meets one of these learnt nothing about its target, so it fails with reason
``local_resources`` and the verdict does not blame the provider for it.
"""

from __future__ import annotations

import errno

REASON = "local_resources"
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def local_resource_error(exc: BaseException) -> str | None:
    """A message when ``exc`` (or the OSError it wraps, or its cause) is one of ours."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in LOCAL_ERRNOS:
            return (f"out of local resources ({errno.errorcode[current.errno]}: "
                    f"{current.strerror or 'no detail'}); the exporter, not the target")
        todo.extend((getattr(current, "os_error", None), current.__cause__, current.__context__))
    return None
