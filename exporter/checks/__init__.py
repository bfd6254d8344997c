"""Our own probes: one module per protocol, each a plain async function (see base.py).

``net/`` holds what several probers share: the HTTP client, name resolution, the target policy,
the defensive JSON loader and the SSE parser.
"""
