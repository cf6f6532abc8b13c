"""The deployment files agree with the code: deploy/check_compose.py finds nothing
wrong with them, and finds what is wrong with broken copies. The container's
healthcheck passes against Daphne with production settings."""

import shutil
import subprocess
import sys

import pytest

from deploy import check_compose
from tests.servers import BASE_DIR, daphne

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghij",
    "JWT_SIGNING_KEY": "another-long-random-production-signing-key-0123456789",
    "ALLOWED_HOSTS": "chat.example.com",
}


@pytest.fixture
def project(tmp_path):
    """A copy of the files the check reads, to break one at a time."""
    for name in check_compose.FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BASE_DIR / name, tmp_path / name)
    return tmp_path


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new))


def test_deploy_files_agree_with_code_and_settings():
    result = subprocess.run(
        [sys.executable, "deploy/check_compose.py"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "agree with the code" in result.stdout


def test_it_reports_a_variable_the_settings_do_not_read(project):
    with (project / ".env.example").open("a") as env:
        env.write("REDIS_PASSWORD=secret\n")
    assert check_compose.check(project) == [
        ".env.example sets REDIS_PASSWORD, which neither the settings nor compose read"
    ]


def test_it_reports_a_setting_missing_from_env_example(project):
    edit(project / ".env.example", "LOG_LEVEL=INFO\n", "")
    assert check_compose.check(project) == [
        ".env.example lacks LOG_LEVEL, which chatsite/settings.py reads"
    ]


def test_it_reports_an_upstream_port_daphne_does_not_listen_on(project):
    edit(project / "docker-compose.yml", "server web:8000;", "server web:9000;")
    assert check_compose.check(project) == ["nginx's upstream web:9000 is not web:8000"]


def test_it_reports_an_asgi_application_that_does_not_exist(project):
    edit(project / "Dockerfile", "chatsite.asgi:application", "chatsite.asgi:app")
    assert check_compose.check(project) == [
        "the web command serves chatsite.asgi:app, which does not exist"
    ]


def test_it_reports_a_web_command_that_is_not_daphne(project):
    edit(project / "Dockerfile", '"python", "-m", "chatsite.serve"', '"uvicorn"')
    assert check_compose.check(project) == [
        "the web command is not `python -m chatsite.serve ... module:attribute`: "
        "['uvicorn', '-e', 'tcp:port=8000:interface=0.0.0.0:backlog=2048', "
        "'--proxy-headers', 'chatsite.asgi:application']"
    ]


def test_it_reports_a_service_without_healthcheck_and_a_missing_dependency(project):
    edit(project / "docker-compose.yml", 'test: ["CMD", "redis-cli", "ping"]', "")
    edit(
        project / "docker-compose.yml",
        "      redis:\n        condition",
        "      cache:\n        condition",
    )
    assert check_compose.check(project) == [
        "redis has no healthcheck",
        "web depends on `cache`, which is not a service",
    ]


def test_it_reports_an_nginx_that_would_keep_old_web_addresses(project):
    edit(project / "docker-compose.yml", "        restart: true\n", "")
    assert check_compose.check(project) == [
        "nginx does not restart with web (depends_on: web: restart: true)"
    ]


def test_it_reports_a_database_url_that_misses_postgres(project):
    edit(project / ".env.example", "@postgres:5432/chat", "@db:5432/chat")
    assert check_compose.check(project) == [
        "DATABASE_URL in .env.example does not point at postgres:5432"
    ]


@pytest.mark.django_db
def test_container_healthcheck_passes_with_production_settings():
    # SECURE_SSL_REDIRECT is on and only chat.example.com is allowed: the
    # probe must present itself the way nginx does.
    env = {"PATH": "/usr/bin:/bin", "ALLOWED_HOSTS": PRODUCTION["ALLOWED_HOSTS"]}
    with daphne(**PRODUCTION) as address:
        healthy = subprocess.run(
            [sys.executable, "deploy/healthcheck.py", f"http://{address}/healthz"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        wrong_host = subprocess.run(
            [sys.executable, "deploy/healthcheck.py", f"http://{address}/healthz"],
            cwd=BASE_DIR,
            env={**env, "ALLOWED_HOSTS": "elsewhere.example.com"},
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert healthy.returncode == 0, healthy.stderr
    assert wrong_host.returncode == 1
