"""bids_harmonize: a BIDS App that removes scanner/site effects from structural MRI with MURD."""

__version__ = "0.1.0"
CODE_URL = "https://github.com/bids-harmonize/bids_harmonize"
