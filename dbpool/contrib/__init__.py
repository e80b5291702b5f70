"""Framework integrations: a Django database backend and SQLAlchemy engines on dbpool.

``dbpool.contrib.django`` is a Django ``ENGINE``; ``dbpool.contrib.sqlalchemy``
has ``create_engine(pool)``. The core package never imports them.
"""
