"""A national bureau's adapter: lanes per country, writer threads, acknowledgements, the
bureau's own channel (answers, reminders), dead letters, and the hub's processes."""
