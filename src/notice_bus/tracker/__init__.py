"""The tracker at HQ: ingest of sends, acknowledgements and answers, measures, consumer
group health, the reminder policy and its escalation, and the tracker's tables."""
