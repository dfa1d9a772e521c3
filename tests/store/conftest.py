"""Store tests use the `database` fixture of tests/conftest.py: a migrated SQLite file or PostgreSQL schema."""
