"""Per-device search for sub-networks, their export and reports (and the end-to-end pipeline)."""
