"""Production settings: secrets come from the environment, and `check --deploy` is clean."""

import json
import os
import subprocess

import pytest

from tests.servers import run_python

PRODUCTION_ENV = {
    "PATH": os.environ["PATH"],
    "DEBUG": "0",
    "SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghij",
    "JWT_SIGNING_KEY": "another-long-random-production-signing-key-0123456789",
    "ALLOWED_HOSTS": "chat.example.com",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_python("manage.py", *args, env=env)


def test_check_deploy_is_clean_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {key: value for key, value in PRODUCTION_ENV.items() if key != "SECRET_KEY"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


@pytest.mark.parametrize("name", ["SECRET_KEY", "JWT_SIGNING_KEY"])
@pytest.mark.parametrize("value", ["replace-me-with-a-long-random-string", "short-secret"])
def test_production_refuses_a_placeholder_or_short_secret(name, value):
    result = manage("check", env={**PRODUCTION_ENV, name: value})
    assert result.returncode != 0
    assert f"{name} is .env.example's placeholder or shorter than 32 characters" in result.stderr


def test_bad_boolean_is_refused_loudly():
    result = manage("check", env={**PRODUCTION_ENV, "DEBUG": "maybe"})
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_production_logs_json_lines_and_development_plain_text():
    script = "import logging; logging.getLogger('chat.test').warning('hello')"
    production = manage("shell", "-c", script, env=PRODUCTION_ENV)
    development = manage("shell", "-c", script, env={"PATH": os.environ["PATH"], "DEBUG": "1"})
    line = json.loads(production.stderr.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["msg"]) == ("WARNING", "chat.test", "hello")
    assert development.stderr.strip().endswith("WARNING chat.test hello")


def test_log_format_overrides_the_default():
    script = "import logging; logging.getLogger('chat.test').warning('hello')"
    result = manage("shell", "-c", script, env={**PRODUCTION_ENV, "LOG_FORMAT": "plain"})
    assert result.stderr.strip().endswith("WARNING chat.test hello")


def test_bad_log_format_and_metrics_network_are_refused_loudly():
    bad_format = manage("check", env={**PRODUCTION_ENV, "LOG_FORMAT": "xml"})
    bad_network = manage("check", env={**PRODUCTION_ENV, "METRICS_ALLOWED_IPS": "10.0.0.0/8,x"})
    assert "LOG_FORMAT must be json or plain" in bad_format.stderr
    assert "METRICS_ALLOWED_IPS: 'x' does not appear" in bad_network.stderr


def test_postgresql_connections_use_tcp_keepalives_unless_the_url_sets_its_own():
    script = (
        "from django.conf import settings; import json;"
        " print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    )
    url = "postgres://chat@db.example.com:5432/chat"
    options = [
        json.loads(
            manage(
                "shell", "-c", script, env={**PRODUCTION_ENV, "DATABASE_URL": u}
            ).stdout.splitlines()[-1]
        )
        for u in (url, f"{url}?keepalives_idle=60")
    ]
    assert (options[0]["keepalives"], options[0]["keepalives_idle"]) == (1, 30)
    assert options[0]["tcp_user_timeout"] == 30_000
    assert options[1]["keepalives_idle"] == 60
