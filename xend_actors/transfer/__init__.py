"""Transfers (the original's xfrd): save, restore, migration out and in (relocation),
the xfr protocol between xends and the save file format."""
