"""The registry's small pure pieces: URLs and secrets, durations, printable text."""

import pytest

from cluster.errors import UserError, printable
from cluster.registry.db.url import parse_url, resolve, scrub, scrubbed
from cluster.registry.heartbeat import format_age, heartbeat_period, parse_duration, stale_after


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("postgresql+psycopg://u:p@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:***@h/db"),
        ("postgres://u:p@h/db?sslmode=require", "postgresql+psycopg://u:***@h/db?sslmode=require"),
    ],
)
def test_postgresql_urls_are_shown_without_password(raw, expected):
    url = parse_url(raw, "EVALCLUSTER_DB")
    assert url.render_as_string(hide_password=True) == expected and url.password == "p"


def test_url_settings(tmp_path, monkeypatch):
    assert resolve(tmp_path).backend == "sqlite" and resolve(tmp_path).path == tmp_path / "registry.db"
    secret = tmp_path / "url"
    secret.write_text("postgresql://u:s3cr%40t@db.example:5432/team\n")
    monkeypatch.setenv("EVALCLUSTER_DB_FILE", str(secret))
    target = resolve(tmp_path)
    assert target.backend == "postgresql" and target.url.password == "s3cr@t"
    assert target.display == "postgresql+psycopg://u:***@db.example:5432/team"
    secret.write_text("   \n")
    with pytest.raises(UserError, match="is empty; it should hold postgresql"):
        resolve(tmp_path)
    with pytest.raises(UserError, match="names no database"):
        parse_url("postgresql://u:p@h", "EVALCLUSTER_DB")


def test_scrub_removes_the_password_in_every_spelling():
    assert scrub("login a:p@ss w/rd@h failed, p@ss w/rd", "p@ss w/rd") == "login a:***@h failed, ***"
    assert scrub("url postgresql://u:p%40ss%20w%2Frd@h/db", "p@ss w/rd") == "url postgresql://u:***@h/db"
    assert scrub("mysql://u:unknown@h/db refused") == "mysql://u:***@h/db refused"  # password not known
    clean = ValueError("nothing secret")
    assert scrubbed(clean, "pw") is clean
    assert str(scrubbed(ValueError("bad pw here"), "pw")) == "ValueError: bad *** here"


@pytest.mark.parametrize(
    "text, seconds", [("90", 90), ("90s", 90), ("10m", 600), ("1.5h", 5400), ("2d", 172800), (" 3M ", 180)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10 minutes", "-5m", "m", "1h30m"])
def test_bad_durations(text):
    with pytest.raises(UserError, match="not understood; use e.g. 90s, 10m, 2h or 1d"):
        parse_duration(text)


def test_ages_and_timeouts(monkeypatch):
    assert [format_age(s) for s in (0, 45, 302, 11040, 176400)] == ["0s", "45s", "5m 2s", "3h 4m", "2d 1h"]
    assert heartbeat_period() == 30 and stale_after() == 180
    monkeypatch.setenv("EVALCLUSTER_HEARTBEAT_S", "0.5")
    assert heartbeat_period() == 0.5
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("EVALCLUSTER_STALE_AFTER_S", bad)
        with pytest.raises(
            UserError, match="EVALCLUSTER_STALE_AFTER_S=.*: input should be (greater than 0|a valid number)"
        ):
            stale_after()


def test_printable_shows_control_characters():
    assert printable("a\x1b[31mb\nc\u202ed\x7f") == "a\\x1b[31mb\\x0ac\\u202ed\\x7f"
    assert printable("[bold]ünïcode ✓[/]") == "[bold]ünïcode ✓[/]"  # markup is rich's business (escape)
