"""Imputers: fill the missing steps of standardised windows, offline and in the engine."""
