"""The journal: the Store protocol with declared capabilities, memory, SQL, SQLite, PostgreSQL, team leases."""
