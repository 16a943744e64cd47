"""The pytest plugin (entry point ``pytest11``): fixtures land here."""
