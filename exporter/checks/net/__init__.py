"""What the probers share below the protocol: the one HTTP client, resolution, limits, parsers."""
