"""Domains: the domain table, one actor per domain, the domain config, its record and
the restart rules."""
