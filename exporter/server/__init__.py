"""The HTTP server: /metrics, /probe, the landing page, badges, status and the web config."""
