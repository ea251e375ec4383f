"""Shared definitions: Kafka messages, the clinical concept dictionary, canonical tables."""
