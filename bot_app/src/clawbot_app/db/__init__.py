"""Database schema, engine and repositories."""
