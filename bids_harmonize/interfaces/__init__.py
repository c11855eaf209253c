"""Thin Nipype interfaces around preproc/ and model/ functions, and the derivatives sink (bids.py)."""
