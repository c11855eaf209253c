"""Thin Nipype interfaces around preproc/ and model/ functions."""
