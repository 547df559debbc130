"""The journal: the Store protocol with declared capabilities; memory, SQL, SQLite,
PostgreSQL and team leases."""
