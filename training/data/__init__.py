"""Loaders that turn each source into the canonical events and stays tables."""
