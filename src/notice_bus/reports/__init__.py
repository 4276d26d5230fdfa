"""What Ops read: the report (table, JSON, CSV, HTML), its charts, the live dashboard and
the tracker's Prometheus metrics."""
