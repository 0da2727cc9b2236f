"""The team's record: runs, models and aliases in one database (SQLite or PostgreSQL, db/), the
artifact store, run heartbeats and provenance, and one writer per output directory."""
