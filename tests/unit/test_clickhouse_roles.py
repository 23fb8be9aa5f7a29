"""ClickHouse roles in settings: which user and which secret each process connects with, and
that the users.xml template defines exactly those users, loopback only (no server needed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from connectors.clickhouse import connect
from meterflow.settings import CLICKHOUSE_USERS, REPO_ROOT, Settings
from meterflow.testing.clickhouse_users import SCRATCH_USERS, scratch_users_env

TEMPLATE = REPO_ROOT / "infra" / "clickhouse" / "users.xml.in"


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # tests/conftest.py maps the roles to the scratch users for every test process: undo it
    for var in scratch_users_env():
        monkeypatch.delenv(var, raising=False)
    d = tmp_path / "secrets"
    d.mkdir()
    for _, principal in [*CLICKHOUSE_USERS.values(), *SCRATCH_USERS.values()]:
        (d / principal).write_text(f"pw-{principal}\n")
    monkeypatch.setenv("METERFLOW_SECRETS", str(d))
    return d


def test_each_role_has_its_user_and_its_principals_secret(secrets: Path) -> None:
    s = Settings()
    assert {role: s.clickhouse_credentials(role) for role in CLICKHOUSE_USERS} == {
        "admin": ("default", "pw-clickhouse-admin"),
        "migrate": ("meterflow_migrate", "pw-clickhouse-migrate"),
        "loader": ("meterflow_loader", "pw-clickhouse-loader"),
        "close": ("meterflow_close", "pw-clickhouse-close"),
        "reader": ("meterflow_reader", "pw-clickhouse-reader"),
        "dashboards": ("meterflow_dashboards", "pw-clickhouse-dashboards"),
        "keys": ("meterflow_keys", "pw-clickhouse-keys"),
    }


def test_environment_names_another_user_principal_or_password(
    secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERFLOW_CLICKHOUSE_READER_USER", "bi_reader")
    assert Settings().clickhouse_credentials("reader") == ("bi_reader", "pw-clickhouse-reader")
    monkeypatch.setenv("METERFLOW_CLICKHOUSE_READER_PRINCIPAL", "clickhouse-dashboards")
    assert Settings().clickhouse_credentials("reader") == ("bi_reader", "pw-clickhouse-dashboards")
    # a deployment's secret store: the variable wins over the file
    monkeypatch.setenv("METERFLOW_SECRET_CLICKHOUSE_LOADER", "from-the-vault")
    assert Settings().clickhouse_credentials("loader") == ("meterflow_loader", "from-the-vault")
    # other roles are untouched
    assert Settings().clickhouse_credentials("close") == ("meterflow_close", "pw-clickhouse-close")


def test_scratch_mapping_moves_the_pipeline_roles_only(
    secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in scratch_users_env().items():
        monkeypatch.setenv(var, value)
    s = Settings()
    assert s.clickhouse_credentials("loader") == (
        "meterflow_scratch_writer",
        "pw-clickhouse-scratch-writer",
    )
    assert s.clickhouse_credentials("close")[0] == "meterflow_scratch_writer"
    assert s.clickhouse_credentials("reader")[0] == "meterflow_scratch_reader"
    assert s.clickhouse_credentials("dashboards")[0] == "meterflow_scratch_reader"
    assert s.clickhouse_credentials("migrate")[0] == "meterflow_migrate"
    assert s.clickhouse_credentials("admin")[0] == "default"


def test_unknown_role_and_missing_secret_are_clear_errors(
    secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="unknown ClickHouse role 'writer'; one of admin, "):
        Settings().clickhouse_credentials("writer")
    (secrets / "clickhouse-reader").unlink()
    with pytest.raises(LookupError, match="METERFLOW_SECRET_CLICKHOUSE_READER"):
        Settings().clickhouse_credentials("reader")


def test_connect_uses_the_roles_credentials(secrets: Path) -> None:
    # building a client opens no connection
    ch = connect(Settings(), "meterflow", role="reader")
    assert (ch.connection.user, ch.connection.password, ch.connection.database) == (
        "meterflow_reader",
        "pw-clickhouse-reader",
        "meterflow",
    )
    with pytest.raises(TypeError):
        connect(Settings(), "meterflow")  # type: ignore[call-arg]  # no default role


def _users() -> dict[str, ET.Element]:
    return {u.tag: u for u in ET.parse(TEMPLATE).getroot().find("users")}


def test_template_defines_every_user_settings_names_and_no_other() -> None:
    named = {user for user, _ in [*CLICKHOUSE_USERS.values(), *SCRATCH_USERS.values()]}
    assert set(_users()) == named


def test_every_user_has_a_hashed_password_and_loopback_only() -> None:
    for name, u in _users().items():
        assert u.find("password") is None, name  # never a plain password
        assert (u.findtext("password_sha256_hex") or "").startswith("@"), name  # rendered
        assert [ip.text for ip in u.find("networks")] == ["127.0.0.1", "::1"], name


def test_profiles_and_database_limits_follow_the_roles() -> None:
    root = ET.parse(TEMPLATE).getroot()
    profiles = {p.tag: p for p in root.find("profiles")}
    users = _users()

    def setting(user: str, name: str) -> str | None:
        return profiles[users[user].findtext("profile")].findtext(name)

    for user in ("meterflow_reader", "meterflow_dashboards", "meterflow_scratch_reader"):
        assert setting(user, "readonly") == "2", user
    writers = ("meterflow_loader", "meterflow_close", "meterflow_keys", "meterflow_scratch_writer")
    for user in writers:
        assert (setting(user, "readonly"), setting(user, "allow_ddl")) == (None, "0"), user
    for user in ("default", "meterflow_migrate"):
        assert (setting(user, "readonly"), setting(user, "allow_ddl")) == (None, None), user
    limited = {
        n: [d.text for d in u.find("allow_databases")]
        for n, u in users.items()
        if u.find("allow_databases") is not None
    }
    assert limited == {
        n: ["@DATABASE@"]
        for n in (
            "meterflow_loader",
            "meterflow_close",
            "meterflow_reader",
            "meterflow_dashboards",
            "meterflow_keys",
        )
    }
