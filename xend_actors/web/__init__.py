"""The HTTP interface: routing, negotiation, SXP replies and HTML pages."""
