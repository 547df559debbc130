"""The journal: the Store protocol with declared capabilities; memory, SQL, SQLite, PostgreSQL,
team leases; and the factory that opens one from a path or URL."""
