"""Placeholder: the order_view tables (being written)."""
