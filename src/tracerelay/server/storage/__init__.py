"""Storage behind one narrow interface (``Store``): SQLite by default, PostgreSQL beyond one
machine. The schema lives in ``migrations`` (Alembic), applied at start by ``migrate``."""
