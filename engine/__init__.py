"""The streaming engine (Bytewax dataflow)."""
