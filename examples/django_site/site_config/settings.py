"""Settings of the example site: Django on dbpool.contrib.django, the database from the environment.

SITE_DB_HOST, SITE_DB_PORT, SITE_DB_USER, SITE_DB_PASSWORD, SITE_DB_NAME name the
MySQL or MariaDB database; SITE_POOL_SIZE and SITE_POOL_MAX_OVERFLOW size the pool.
"""

import os

DEBUG = False
SECRET_KEY = os.environ.get("SITE_SECRET_KEY", "example-only-not-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["notes"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "site_config.urls"
WSGI_APPLICATION = "site_config.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "dbpool.contrib.django",
        "HOST": os.environ.get("SITE_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("SITE_DB_PORT", "3306"),
        "USER": os.environ.get("SITE_DB_USER", "app"),
        "PASSWORD": os.environ.get("SITE_DB_PASSWORD", ""),
        "NAME": os.environ.get("SITE_DB_NAME", "app"),
        "CONN_MAX_AGE": 0,  # required with a pool: connections go back at the end of each request
        "CONN_HEALTH_CHECKS": True,  # the pool checks a connection before lending it
        "OPTIONS": {
            "pool": {
                "size": int(os.environ.get("SITE_POOL_SIZE", "4")),
                "max_overflow": int(os.environ.get("SITE_POOL_MAX_OVERFLOW", "2")),
                "timeout": 30,
            },
        },
    },
}
