"""Placeholder: the inbox tables (being written)."""
