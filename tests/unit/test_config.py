"""Settings precedence and error messages (pure: no files outside tmp_path, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshloop.config import OPTIONS, PROCESS_VARIABLES, Settings, load_settings, read_environment
from meshloop.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshloop.yaml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    settings = load_settings(environ={})
    assert settings.http_port == 8080
    assert settings.clickhouse_http_port == 8123
    assert settings.bind == "127.0.0.1"
    assert settings.data_dir == Path("meshloop-data")


def test_flags_win_over_environment_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "http_port: 1000\nclickhouse_http_port: 1001\ndatabase: fromfile\n")
    environ = {"MESHLOOP_HTTP_PORT": "2000", "MESHLOOP_CLICKHOUSE_HTTP_PORT": "2001"}
    settings = load_settings(flags={"http_port": "3000"}, environ=environ, config_file=path)
    assert settings.http_port == 3000
    assert settings.clickhouse_http_port == 2001
    assert settings.database == "fromfile"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "retention_days: 7\n")
    settings = load_settings(environ={"MESHLOOP_CONFIG": str(path)})
    assert settings.retention_days == 7
    assert settings.config_file == path


def test_dashes_in_file_keys_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "http-port: 0\n")
    assert load_settings(environ={}, config_file=path).http_port == 0


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("htp_port: 1\n", "htp_port", "unknown setting"),
        ("http_port: eighty\n", "http_port", "expected an integer"),
        ("http_port: 70000\n", "http_port", "outside 0-65535"),
        ("retention_days: -1\n", "retention_days", "0 (keep forever)"),
        ("log_level: loud\n", "log_level", "expected one of"),
        ("database: 'x; DROP'\n", "database", "letters, digits"),
        ("clickhouse_url: ftp://x\n", "clickhouse_url", "expected http"),
        ("http_port: [1, 2]\n", "http_port", "expected an integer"),
        ("- a\n- b\n", "(top level)", "expected a mapping"),
    ],
)
def test_bad_file_names_file_key_and_problem(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, config_file=path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert info.value.key == key
    assert fragment in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "http_port: 1\nbind: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, config_file=path)
    assert f"{path}:" in str(info.value)
    assert "invalid YAML" in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(environ={}, config_file=tmp_path / "absent.yaml")


def test_unknown_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"MESHLOOP_HTTP_PROT": "1"})
    assert str(info.value) == "environment: MESHLOOP_HTTP_PROT: unknown setting"


def test_test_suite_variables_are_not_settings() -> None:
    settings = load_settings(environ={"MESHLOOP_TEST_CLICKHOUSE_URL": "http://x:1"})
    assert settings.clickhouse_url is None


def test_binding_beyond_loopback_requires_an_admin_token() -> None:
    with pytest.raises(ConfigError, match="admin_token"):
        load_settings(flags={"bind": "0.0.0.0"}, environ={})
    settings = load_settings(flags={"bind": "0.0.0.0", "admin_token": "s3cret"}, environ={})
    assert not settings.bind_is_loopback


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_addresses(bind: str) -> None:
    assert Settings(bind=bind).bind_is_loopback


def test_redacted_hides_secrets() -> None:
    settings = Settings(clickhouse_url="http://u:pw@h:8123", admin_token="t")
    shown = settings.redacted()
    assert shown["clickhouse_url"] == "***"
    assert shown["admin_token"] == "***"
    assert shown["http_port"] == 8080


def test_every_option_is_a_settings_field() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert {option.name for option in OPTIONS} <= fields
    for option in OPTIONS:
        assert getattr(Settings(), option.name) == option.default


def test_process_variables_are_not_settings_and_match_their_readers() -> None:
    from meshloop.accesslog import native
    from meshloop.store import native_format

    assert PROCESS_VARIABLES == {native.LIBRARY_ENV, native_format.LIBRARY_ENV}
    assert read_environment(dict.fromkeys(PROCESS_VARIABLES, "0")) == {}
