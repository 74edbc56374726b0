"""Prefect flows: thin wrappers that chain dga-engine stages (see build_dga.py)."""
