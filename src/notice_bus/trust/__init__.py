"""Trust between HQ and the bureaus: notice signatures, HQ's keyring, acknowledgement MACs."""
