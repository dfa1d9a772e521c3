"""Tests of the `orderflow` command line and the local dev stack."""
