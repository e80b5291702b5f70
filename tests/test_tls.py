"""TLS against a MariaDB of its own, started with a throwaway CA made with openssl.

One set of options for both drivers: ``ssl_ca``, ``ssl_cert``, ``ssl_key``,
``ssl_verify_cert``, ``ssl_verify_identity``, or the same without the ``ssl_`` prefix
in an ``ssl`` mapping. Encrypted whenever the server offers TLS; verified when a CA
is given; a certificate that fails verification fails the connect at once.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbpool import ConfigError, ConnectError, make_pool
from tests.mariadb import MariaDBServer

pytestmark = pytest.mark.mysql

TLS_USER = "dbpool_tls"
TLS_PASSWORD = "dbpool-tls-secret-5f2c"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN=dbpool test {name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )


def make_cert(directory: Path, ca: str, name: str, san: str) -> None:
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=directory,
    )
    (directory / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        f"{name}.pem",
        "-extfile",
        f"{name}.ext",
        cwd=directory,
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed for the TLS tests (apt-get install openssl)")
    directory = tmp_path_factory.mktemp("tls")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")  # a CA that signed nothing the server has
    make_cert(directory, "ca", "server", "IP:127.0.0.1")
    make_cert(directory, "ca", "client", "DNS:dbpool-client")
    make_cert(directory, "ca", "elsewhere", "DNS:db.elsewhere.invalid")
    return directory


def start_tls_server(certs: Path, cert: str) -> MariaDBServer:
    return MariaDBServer(
        ignore_env=True,
        extra_args=(
            f"--ssl-ca={certs / 'ca.pem'}",
            f"--ssl-cert={certs / f'{cert}.pem'}",
            f"--ssl-key={certs / f'{cert}.key'}",
        ),
    ).start()


@pytest.fixture(scope="module")
def tls_server(certs: Path) -> Iterator[MariaDBServer]:
    server = start_tls_server(certs, "server")
    try:
        admin = server.admin_connect()
        with admin.cursor() as cur:
            account = f"'{TLS_USER}'@'127.0.0.1'"
            cur.execute(f"CREATE USER {account} IDENTIFIED BY %s REQUIRE SSL", (TLS_PASSWORD,))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{server.database}`.* TO {account}")
            account = f"'{TLS_USER}_x509'@'127.0.0.1'"
            cur.execute(f"CREATE USER {account} IDENTIFIED BY %s REQUIRE X509", (TLS_PASSWORD,))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{server.database}`.* TO {account}")
        admin.close()
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_pool(
    tls_server: MariaDBServer,
    pools: list[Any],
    mysql_driver: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Any:

    def new(**options: Any) -> Any:
        pool = make_pool(**{**tls_server.params(), "driver": mysql_driver, **options})
        pools.append(pool)
        return pool

    return new


def cipher(pool: Any) -> str:
    with pool.acquire() as conn:
        cur = conn.cursor()
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cur.fetchone()
        cur.close()
    result = row[1]
    return str(result.decode() if isinstance(result, bytes) else result)


def test_encrypted_by_default_when_the_server_offers_tls(tls_pool: Any, mysql_driver: str) -> None:
    used = cipher(tls_pool())
    print(f"\ntls/{mysql_driver}/default: cipher {used!r}")
    assert used


def flat(certs: Path, ca: str = "ca", **extra: Any) -> dict[str, Any]:
    return {"ssl_ca": str(certs / f"{ca}.pem"), **extra}


def nested(certs: Path, ca: str = "ca", **extra: Any) -> dict[str, Any]:
    return {"ssl": {"ca": str(certs / f"{ca}.pem"), **extra}}


FORMS = {"flat": flat, "dict": nested}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_verified_when_a_ca_is_given(
    tls_pool: Any, certs: Path, form: str, mysql_driver: str
) -> None:
    used = cipher(tls_pool(**FORMS[form](certs)))
    print(f"\ntls/{mysql_driver}/{form}: cipher {used!r}")
    assert used


@pytest.mark.parametrize("form", sorted(FORMS))
def test_identity_verified_on_request(tls_pool: Any, certs: Path, form: str) -> None:
    key = "ssl_verify_identity" if form == "flat" else "verify_identity"
    assert cipher(tls_pool(**FORMS[form](certs, **{key: True})))


def test_tls_can_be_disabled(tls_pool: Any, mysql_driver: str) -> None:
    assert cipher(tls_pool(ssl_disabled=True)) == ""


@pytest.mark.parametrize("form", sorted(FORMS))
def test_wrong_ca_fails_at_once(tls_pool: Any, certs: Path, form: str, mysql_driver: str) -> None:
    pool = tls_pool(**FORMS[form](certs, ca="other-ca"), timeout=20)
    with pytest.raises(ConnectError) as caught:
        pool.acquire()
    text = str(caught.value)
    stats = pool.get_stats()
    print(
        f"\ntls/{mysql_driver}/{form}/wrong CA: {text} "
        f"(connect_failures={stats['connect_failures']})"
    )
    assert "TLS certificate verification failed" in text
    assert "ssl_ca" in text
    assert "cannot be reached" not in text
    assert stats["connect_failures"] == 1


@pytest.mark.parametrize("options", ["default", "ca"])
def test_require_ssl_account(tls_pool: Any, certs: Path, options: str, mysql_driver: str) -> None:
    extra = {} if options == "default" else flat(certs)
    pool = tls_pool(user=TLS_USER, password=TLS_PASSWORD, **extra)
    with pool.acquire() as conn:
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0].startswith(TLS_USER + "@")
        cur.close()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_client_certificate(tls_pool: Any, certs: Path, form: str) -> None:
    files = {"cert": str(certs / "client.pem"), "key": str(certs / "client.key")}
    extra = {f"ssl_{key}": value for key, value in files.items()} if form == "flat" else files
    pool = tls_pool(user=f"{TLS_USER}_x509", password=TLS_PASSWORD, **FORMS[form](certs, **extra))
    assert cipher(pool)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"ssl": "yes"}, "ssl must be a mapping"),
        ({"ssl": {"ca": "/x.pem", "capath": "/etc"}}, "unknown key 'capath' in ssl"),
        ({"ssl": {"ca": "/x.pem"}, "ssl_ca": "/y.pem"}, "ssl_ca is given twice"),
        ({"ssl_ca": 5}, "ssl_ca must be a path"),
        ({"ssl_verify_cert": "yes"}, "ssl_verify_cert must be true or false"),
        ({"ssl": {"verify_identity": 1}}, "ssl_verify_identity must be true or false"),
        (
            {"ssl_verify_identity": True, "ssl_verify_cert": False},
            "ssl_verify_identity needs ssl_verify_cert",
        ),
    ],
)
def test_bad_tls_options(
    options: dict[str, Any],
    words: str,
    mysql_driver: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_pool(host="127.0.0.1", port=1, driver=mysql_driver, **options)
    print(f"\n{options}: {caught.value}")
    assert words in str(caught.value)


@pytest.fixture(scope="module")
def misnamed_server(certs: Path) -> Iterator[MariaDBServer]:
    """A server whose certificate, signed by the right CA, is made out to another name."""
    server = start_tls_server(certs, "elsewhere")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("form", sorted(FORMS))
def test_identity_checked_only_on_request(
    misnamed_server: MariaDBServer,
    certs: Path,
    form: str,
    mysql_driver: str,
    pools: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    params = {**misnamed_server.params(), "driver": mysql_driver, "timeout": 20}
    signed = make_pool(**params, **FORMS[form](certs))
    pools.append(signed)
    assert cipher(signed)  # the CA is right: verified, the name is not checked
    key = "ssl_verify_identity" if form == "flat" else "verify_identity"
    checked = make_pool(**params, **FORMS[form](certs, **{key: True}))
    pools.append(checked)
    with pytest.raises(ConnectError) as caught:
        checked.acquire()
    print(f"\ntls/{mysql_driver}/{form}/misnamed: {caught.value}")
    assert "TLS certificate verification failed" in str(caught.value)
    assert checked.get_stats()["connect_failures"] == 1


def test_key_password_is_pymysql_only() -> None:
    with pytest.raises(
        ConfigError, match="ssl_key_password is not supported by driver 'mysql-connector'"
    ) as caught:
        make_pool(
            host="127.0.0.1",
            port=1,
            driver="mysql-connector",
            ssl={"key": "/k.pem", "key_password": TLS_PASSWORD},
        )
    assert TLS_PASSWORD not in str(caught.value)
