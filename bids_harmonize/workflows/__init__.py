"""Nipype workflow builders and the level runners."""
