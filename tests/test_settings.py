"""Settings: parcours.toml, then the environment, then the command line; checked at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from parcours.runtime.settings import SettingsError, load_settings


def test_defaults_use_sqlite_inside_the_data_directory(tmp_path: Path) -> None:
    settings = load_settings({"PARCOURS_DATA_DIR": str(tmp_path)})
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/parcours.db"
    assert settings.port == 8000


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "parcours.toml"
    config.write_text('port = 9000\ndefault_region = "BE"\n')
    settings = load_settings({"PARCOURS_PORT": "9100"}, config_file=config)
    assert settings.port == 9100
    assert settings.default_region == "BE"


def test_the_command_line_wins_over_both(tmp_path: Path) -> None:
    settings = load_settings({"PARCOURS_PORT": "9100"}).with_overrides(port=9200, host=None)
    assert settings.port == 9200
    assert settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PARCOURS_PORT": "0"}, "port must be between 1 and 65535"),
        ({"PARCOURS_PORT": "x"}, "PARCOURS_PORT: port must be a whole number"),
        ({"PARCOURS_DATABASE_URL": "mysql://x"}, "database_url must start with"),
        ({"PARCOURS_DEFAULT_REGION": "France"}, "default_region must be a two-letter"),
        ({"PARCOURS_LOG_LEVEL": "loud"}, "log_level must be"),
        ({"PARCOURS_INGEST_BATCH_EVENTS": "0"}, "ingest_batch_events must be between"),
        ({"PARCOURS_LOG_FORMAT": "xml"}, "log_format must be auto, text or json"),
        ({"PARCOURS_SERVE_WORKER": "maybe"}, "PARCOURS_SERVE_WORKER: serve_worker must be true"),
        ({"PARCOURS_WORKER_STALE_SECONDS": "1"}, "worker_stale_seconds must be between 3"),
        ({"PARCOURS_METRICS_PORT": "70000"}, "metrics_port must be between 0"),
        ({"PARCOURS_SHUTDOWN_TIMEOUT_SECONDS": "0"}, "shutdown_timeout_seconds must be between"),
        ({"PARCOURS_RECOMMENDATION_WEEKS": "53"}, "recommendation_weeks must be between 1 and 52"),
    ],
)
def test_a_wrong_value_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ)


def test_an_unknown_setting_in_the_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "parcours.toml"
    config.write_text("prot = 80\n")
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load_settings({}, config_file=config)


@pytest.mark.parametrize(
    ("name", "value", "instead"),
    [
        ("writer_process", "true", "serve` is one process"),
        ("http_workers", "2", "several `parcours serve`"),
    ],
)
def test_a_removed_setting_asking_for_what_is_gone_says_what_to_do_instead(
    tmp_path: Path, name: str, value: str, instead: str
) -> None:
    config = tmp_path / "parcours.toml"
    config.write_text(f"{name} = {value}\n")
    with pytest.raises(SettingsError, match=f"{name} was removed: .*{instead}"):
        load_settings({}, config_file=config)
    with pytest.raises(SettingsError, match=f"PARCOURS_{name.upper()}: {name} was removed"):
        load_settings({f"PARCOURS_{name.upper()}": value})


@pytest.mark.parametrize(("name", "value"), [("writer_process", "false"), ("http_workers", "1")])
def test_a_removed_setting_asking_for_the_one_way_left_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, value: str
) -> None:
    config = tmp_path / "parcours.toml"
    config.write_text(f"{name} = {value}\nport = 8123\n")
    with caplog.at_level(logging.WARNING, logger="parcours.runtime.settings"):
        assert load_settings({}, config_file=config).port == 8123
        assert load_settings({f"PARCOURS_{name.upper()}": value}).port == 8000
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(f"{name} was removed" in w and "is ignored" in w for w in warnings)


def test_a_broken_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "parcours.toml"
    config.write_text("port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({}, config_file=config)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({"PARCOURS_CONFIG": str(tmp_path / "missing.toml")})


def test_switches_read_true_and_false_from_the_environment_and_the_file(tmp_path: Path) -> None:
    assert load_settings({"PARCOURS_SERVE_WORKER": "false"}).serve_worker is False
    assert load_settings({"PARCOURS_SERVE_WORKER": "1"}).serve_worker is True
    config = tmp_path / "parcours.toml"
    config.write_text("serve_worker = false\n")
    assert load_settings({}, config_file=config).serve_worker is False
    config.write_text('serve_worker = "no"\n')
    assert load_settings({}, config_file=config).serve_worker is False
