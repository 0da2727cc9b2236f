"""The registry's database: where it is (url), how to reach it (engine), its tables
(schema) and their revisions (migrate, with Alembic scripts under ``migrations/``)."""
