"""In-tree plugins, installed as ``harness.plugins``."""
