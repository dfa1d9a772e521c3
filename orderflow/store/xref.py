"""Placeholder: the xref tables (being written)."""
