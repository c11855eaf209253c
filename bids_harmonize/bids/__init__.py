"""BIDS input (discovery) and output: the names in OUT (outputs.py) and their writes (derivatives.py)."""
