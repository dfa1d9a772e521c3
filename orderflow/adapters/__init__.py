"""Clients for each external system: its wire protocol, its authentication, its mapping to canonical models."""
