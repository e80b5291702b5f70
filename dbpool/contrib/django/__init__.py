"""A Django database backend: Django's MySQL backend on a dbpool pool.

Use ``"ENGINE": "dbpool.contrib.django"`` with ``"OPTIONS": {"pool": True}`` (or a
dict of pool options); see the README's "Django and SQLAlchemy" section.
"""
