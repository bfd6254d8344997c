"""``python -m bench.uvloop_main ARGS``: the exporter's command line on uvloop's event loop, to
measure what uvloop would bring (the exporter itself runs on the standard asyncio loop)."""

from __future__ import annotations

import sys

import uvloop

from exporter.cli import main

if __name__ == "__main__":
    uvloop.install()
    sys.exit(main())
