"""Exposition: the state as Prometheus series (collector) and as the JSON status document."""
