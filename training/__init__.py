"""Batch side: loaders into the canonical tables, cohorts and labels, models, evaluation."""
