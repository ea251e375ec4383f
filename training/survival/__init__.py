"""Mortality and survival models: features, torch networks, training, export to the engine."""
