"""Local systems: the sink contract, the plug-in base class and registry, the SQL sink
and the tables of a country's copy."""
