"""Shared fixtures: real SQLite and PostgreSQL stores, a local folder and a loopback S3 server.

- ``store_url`` is parametrized over ``sqlite`` and ``postgres``; the PostgreSQL
  case needs ``KEEL_TEST_POSTGRES_URL`` and otherwise skips, saying so. Each
  test session gets its own PostgreSQL database, emptied between tests.
- ``artifacts_url`` is parametrized over ``local`` and ``s3``; the S3 case runs
  moto's S3 server on a free loopback port (a real HTTP server, no patching).
- ``keel_env`` points the process's Keel at a fresh home with those two.
- ``run_keel`` runs the installed ``keel`` command in a child process (``_support.cli``).
"""

from __future__ import annotations

import os

# Two test workers share two cores: OpenMP's default of one thread per core per process
# oversubscribes them, and its spinning threads slowed scikit-learn a hundredfold under load.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import keel
from _support.cli import run_keel as _run_keel
from _support.network import free_port
from keel.artifacts import ArtifactStore
from keel.config import Settings

POSTGRES_ENV = "KEEL_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's KEEL_* variables or a .keel above the checkout."""
    for name in list(os.environ):
        if name.startswith("KEEL_") and not name.startswith("KEEL_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    from keel.tracking import fluent

    fluent._shutdown()
    from keel.config import reset_settings
    from keel.store import reset_stores

    reset_settings()
    reset_stores()


# -- PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session on the server ``KEEL_TEST_POSTGRES_URL`` names."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql://postgres@127.0.0.1/test)"
        )
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from keel.store import normalize_url

    admin_url = make_url(normalize_url(base))
    name = f"keel_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server is configured but not reachable: that is a failure
        pytest.fail(f"cannot create a test database on {base}: {exc}")
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    yield url
    from keel.store import reset_stores

    reset_stores()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        tables = (
            conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename <> 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        if "audit_head" in tables:  # the chain's genesis row, as the migration writes it
            conn.execute(
                text("INSERT INTO audit_head (id, seq, digest) VALUES (1, 0, :d)"), {"d": "0" * 64}
            )
    engine.dispose()


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    _truncate_postgres(postgres_url)
    return postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A metadata store URL: SQLite in the test's folder, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keel.db'}"
    url = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return str(url)


# -- S3 -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    server_mod = pytest.importorskip("moto.server", reason="S3 tests need moto[server]")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the loopback server; yields ``s3://<bucket>``."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"keel-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture(params=["local", "s3"])
def artifacts_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An artifact store URL: a local folder, or a prefix in a fresh loopback S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "artifacts")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/keel"


@pytest.fixture
def s3_endpoint(request: pytest.FixtureRequest, artifacts_url: str) -> str | None:
    return request.getfixturevalue("s3_server") if artifacts_url.startswith("s3://") else None


# -- Keel ---------------------------------------------------------------------------


@pytest.fixture
def keel_env(tmp_path: Path, store_url: str) -> Settings:
    """Keel initialised on a fresh home with the parametrized metadata store."""
    return keel.init(home=tmp_path / ".keel", store_url=store_url)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, s3_server: str):
    """A real ``keel server`` for this test session, on its own PostgreSQL database and S3.

    Tests reach it through :func:`any_env`'s ``server`` case, which empties its
    database and makes a fresh admin token first.
    """
    import boto3
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from _support.control_plane import start_control_plane

    url = make_url(postgres_url)
    name = f"{url.database}_srv"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store_url = url.set(database=name).render_as_string(hide_password=False)
    bucket = f"keel-srv-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    home = tmp_path_factory.mktemp("control-plane")
    with start_control_plane(
        home, store_url=store_url, artifacts_url=f"s3://{bucket}/keel", s3_endpoint_url=s3_server
    ) as server:
        yield server
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres", "server"])
def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Keel on each of its three modes: embedded SQLite, PostgreSQL, and through a real server.

    The ``server`` case makes this process's Keel a client of :func:`control_plane`
    (PostgreSQL and loopback S3 behind it) with a fresh admin token, on an emptied database.
    """
    home = tmp_path / ".keel"
    if request.param == "sqlite":
        return keel.init(home=home)
    if request.param == "postgres":
        return keel.init(home=home, store_url=request.getfixturevalue("fresh_postgres_url"))
    server = request.getfixturevalue("control_plane")
    _truncate_postgres(server.store_url)
    from keel.config import load_settings
    from keel.server.run import init_admin

    _, token = init_admin(
        load_settings(home=tmp_path / ".server-admin", store_url=server.store_url)
    )
    server.admin_token = token
    return keel.init(home=home, server_url=server.url, token=token)


@pytest.fixture
def sqlite_env(tmp_path: Path) -> Settings:
    """Keel on the embedded default only (SQLite and a local folder in a fresh home)."""
    return keel.init(home=tmp_path / ".keel")


# -- real datasets and stored bytes ----------------------------------------------------


@pytest.fixture(scope="session")
def iris():
    """scikit-learn's iris as ``(X, y)`` frames."""
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True, as_frame=True)


@pytest.fixture(scope="session")
def breast_cancer():
    """scikit-learn's breast_cancer as ``(X, y)`` frames."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True, as_frame=True)


@pytest.fixture(scope="session")
def diabetes():
    """scikit-learn's diabetes as ``(X, y)`` frames."""
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True, as_frame=True)


@pytest.fixture
def stored_object() -> Callable[[Settings, str, str], Path]:
    """A function: the file in the local artifact store holding one of a run's artifacts."""

    def find(settings: Settings, run_id: str, artifact: str) -> Path:
        entries = keel.Client().list_artifacts(run_id, artifact)
        [entry] = [e for e in entries if e.path == artifact]
        return Path(settings.artifacts_url) / ArtifactStore.key(entry.digest)

    return find


# -- the keel command ----------------------------------------------------------------


@pytest.fixture
def run_keel() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_keel(*args, settings=, env=, cwd=, input=, check=, timeout=)`` runs ``keel *args``.

    The child is the installed console script with this process's environment minus
    every ``KEEL_*`` variable; ``settings`` points it at a home and store, ``env`` adds
    variables. It returns the finished ``CompletedProcess`` (text output) and fails the
    test after ``_support.cli.TIMEOUT`` seconds unless ``timeout`` says otherwise.
    """
    return _run_keel


@pytest.fixture
def as_user(request: pytest.FixtureRequest) -> Callable[[str], keel.Client]:
    """``as_user(name)``: a client on the test's Keel acting as ``name``.

    Locally that is the name the client claims; through a server it is a new user
    (role ``editor``) and a token of theirs, since a server believes only tokens.
    """

    def client(user: str) -> keel.Client:
        from keel.config import get_settings

        settings = get_settings()
        if settings.server_url:
            token = request.getfixturevalue("control_plane").make_user(user, "editor")
            return keel.Client(replace(settings, token=token))
        return keel.Client(replace(settings, user=user))

    return client
