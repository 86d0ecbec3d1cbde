"""PostgreSQL + pgvector: the embedded server, connections, schema migrations, reads and writes."""
