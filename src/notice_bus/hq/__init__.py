"""HQ: publishing, updating and cancelling notices through the outbox, bootstrap of late
countries, and HQ's tables."""
