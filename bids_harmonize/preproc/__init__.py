"""Preprocessing image operations (plain functions on nibabel images)."""
