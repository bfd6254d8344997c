"""The engine: runs every check on its schedule, keeps its state, and judges each upstream."""
