"""What every role runs on: settings, database engines and migrations, Kafka clients,
worker processes, retries, the local broker. It imports no role and no wire type."""
