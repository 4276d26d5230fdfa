"""Local-system plug-ins for country adapters; see ``notice_bus.local_system``."""
