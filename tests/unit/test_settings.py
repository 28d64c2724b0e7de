"""Settings are read once, checked at start-up, and every error names its variable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from mailer.errors import SettingsError
from mailer.settings import Settings


def settings(tmp_path, **env) -> Settings:
    return Settings.from_env({"MAILER_INSTANCE_PATH": str(tmp_path / "instance"), **env},
                             dotenv=tmp_path / "none.env")


def test_the_embedded_default_needs_no_settings_and_keeps_its_generated_key(tmp_path):
    first = settings(tmp_path)
    key_file = tmp_path / "instance" / "secret_key"
    assert first.embedded and first.database_url == f"sqlite:///{tmp_path / 'instance' / 'mailer.db'}"
    assert first.mail.scheme == "file" and first.mail.path == tmp_path / "instance" / "mail"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings(tmp_path).secret_keys == first.secret_keys  # generated once, kept
    assert first.log_mail is True


def test_outside_the_embedded_default_a_secret_key_is_required(tmp_path):
    with pytest.raises(SettingsError, match="MAILER_SECRET_KEY is required"):
        settings(tmp_path, MAILER_DATABASE_URL="postgresql://postgres@127.0.0.1/test")


def test_secret_keys_rotate_newest_first(tmp_path):
    loaded = settings(tmp_path, MAILER_SECRET_KEY="new-key-0123456789abcdef, old-key-0123456789abcdef")
    assert loaded.secret_keys == ("new-key-0123456789abcdef", "old-key-0123456789abcdef")
    with pytest.raises(SettingsError, match="MAILER_SECRET_KEY"):
        settings(tmp_path, MAILER_SECRET_KEY="short")


@pytest.mark.parametrize("url, scheme, host, port, user", [
    ("smtp://relay.local:2525", "smtp", "relay.local", 2525, None),
    ("smtp+starttls://me%40x.nl:p%40ss@smtp.x.nl:587", "smtp+starttls", "smtp.x.nl", 587, "me@x.nl"),
    ("smtps://u:p@smtp.x.nl", "smtps", "smtp.x.nl", 465, "u"),
])
def test_mail_urls_are_parsed(tmp_path, url, scheme, host, port, user):
    mail = settings(tmp_path, MAILER_MAIL_URL=url).mail
    assert (mail.scheme, mail.host, mail.port, mail.username) == (scheme, host, port, user)


def test_file_and_console_mail_urls(tmp_path):
    assert settings(tmp_path, MAILER_MAIL_URL="file:///var/mail/out").mail.path.as_posix() == "/var/mail/out"
    assert settings(tmp_path, MAILER_MAIL_URL="console:").mail.scheme == "console"


@pytest.mark.parametrize("variable, value, message", [
    ("MAILER_MAIL_URL", "ftp://x", "MAILER_MAIL_URL scheme"),
    ("MAILER_MAIL_URL", "smtp://:25", "MAILER_MAIL_URL needs a host"),
    ("MAILER_DATABASE_URL", "mysql://x/y", "MAILER_DATABASE_URL must be"),
    ("MAILER_BASE_URL", "guide.example.nl", "MAILER_BASE_URL must be an absolute"),
    ("MAILER_FROM", "not an address", "MAILER_FROM must be an address"),
    ("MAILER_FORM_MIN_SECONDS", "soon", "MAILER_FORM_MIN_SECONDS must be a number"),
    ("MAILER_SEND_BATCH_SIZE", "0", "MAILER_SEND_BATCH_SIZE must be at least 1"),
    ("MAILER_SIGNUP_RATE_LIMIT", "lots", "MAILER_SIGNUP_RATE_LIMIT must look like"),
    ("MAILER_RATELIMIT_STORAGE_URL", "memcached://x", "MAILER_RATELIMIT_STORAGE_URL"),
    ("MAILER_LOG_MAIL", "maybe", "MAILER_LOG_MAIL must be true or false"),
])
def test_bad_values_are_refused_with_the_variable_named(tmp_path, variable, value, message):
    with pytest.raises(SettingsError, match=message):
        settings(tmp_path, **{variable: value})


def test_a_dotenv_file_is_read_and_the_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("MAILER_FROM=Dotenv <a@example.nl>\nMAILER_BASE_URL=https://dotenv.example.nl\n")
    loaded = Settings.from_env({"MAILER_INSTANCE_PATH": str(tmp_path / "i"), "MAILER_FROM": "Env <b@example.nl>"},
                               dotenv=dotenv)
    assert loaded.mail_from == "Env <b@example.nl>"
    assert loaded.base_url == "https://dotenv.example.nl"


def test_the_command_line_reports_a_bad_setting_without_a_traceback(tmp_path):
    env = {**os.environ, "MAILER_INSTANCE_PATH": str(tmp_path), "MAILER_DATABASE_URL": "postgresql://x@127.0.0.1/x"}
    env.pop("MAILER_SECRET_KEY", None)
    result = subprocess.run([sys.executable, "-m", "mailer.cli", "tick"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Error: MAILER_SECRET_KEY is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_generated_key_is_refused_with_the_way_out(tmp_path):
    (tmp_path / "instance").mkdir()
    (tmp_path / "instance" / "secret_key").write_text("\n")
    with pytest.raises(SettingsError, match="MAILER_INSTANCE_PATH: .* holds no usable key"):
        settings(tmp_path)


def test_outside_the_embedded_default_the_base_url_is_required(tmp_path):
    with pytest.raises(SettingsError, match="MAILER_BASE_URL is required"):
        settings(tmp_path, MAILER_DATABASE_URL="postgresql://postgres@127.0.0.1/test",
                 MAILER_SECRET_KEY="0123456789abcdef0123")


def test_a_command_default_yields_to_dotenv_and_environment(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("MAILER_BASE_URL=https://dotenv.example.nl\n")
    loaded = Settings.from_env({"MAILER_INSTANCE_PATH": str(tmp_path / "i")}, dotenv=dotenv,
                               defaults={"MAILER_BASE_URL": "http://127.0.0.1:9000"})
    assert loaded.base_url == "https://dotenv.example.nl"
