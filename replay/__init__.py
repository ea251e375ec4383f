"""Turns archived and simulated data into live feeds."""
