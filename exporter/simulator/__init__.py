"""The built-in simulator: a fake status page and fake APIs on loopback, driven by scenarios.

``Simulator`` is for code and tests (start on port 0, read ``base_url``); ``serve()`` runs one
until cancelled, for ``claude-status-exporter simulate`` and ``python -m exporter.simulator``.
"""

from exporter.simulator.server import LIFECYCLE, Simulator, UnknownScenario, serve

__all__ = ["LIFECYCLE", "Simulator", "UnknownScenario", "serve"]
