"""Test database creation: Django's MySQL one, closing the alias's pool first."""

from __future__ import annotations

from typing import Any

from django.db.backends.mysql.creation import DatabaseCreation as MySQLDatabaseCreation


class DatabaseCreation(MySQLDatabaseCreation):  # type: ignore[misc]
    """Closes the pool before the test database is dropped, as Django does for PostgreSQL."""

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> Any:
        self.connection.close_pool()
        return super()._destroy_test_db(test_database_name, verbosity)
