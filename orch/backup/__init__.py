"""Verified backups of the ORCH database: create, verify, restore, prune, and the catalog that lists them.

A backup counts only once it is verified (integrity check, data-quality suite, checksum) and recorded in
the catalog; the catalog is a JSON file beside the backups, outside the database it describes, so a
corrupt database cannot take the list of its own backups with it.
"""
