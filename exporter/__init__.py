"""claude-status-exporter: is Claude down, degraded, or is it just me?"""

__version__ = "0.1.0"
