"""The xm command line: one module per command group, all on XendClient."""
