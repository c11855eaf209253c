"""BIDS input (discovery) and output (derivatives)."""
