"""Domains: the domain table, one actor per domain, configs, restarts, transfers."""
