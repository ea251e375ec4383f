"""bedside: a streaming bedside-monitoring engine for intensive care units."""

__version__ = "0.1.0"
