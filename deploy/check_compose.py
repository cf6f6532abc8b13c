"""Check that the deployment files name only what exists in the code and settings.

    python deploy/check_compose.py      # part of `make prod-check`; exit 1 on a problem

`docker-compose config` proves docker-compose.yml well-formed; this proves it
right: every variable in .env.example is one chatsite/settings.py reads (or
one compose itself interpolates) and every variable the settings read is in
.env.example; the services the compose file refers to exist and have
healthchecks; the web command's ASGI module and attribute exist; nginx's
upstream is the web service on the port Daphne listens on; the URLs in
.env.example point at the compose services; the health route exists.

Reads files only (no Django, no Docker), so it runs anywhere.
"""

import ast
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything check() reads, relative to the project directory.
FILES = (
    "docker-compose.yml",
    ".env.example",
    "Dockerfile",
    "chatsite/settings.py",
    "chatsite/urls.py",
    "chatsite/asgi.py",
    "deploy/nginx.conf.template",
    "deploy/healthcheck.py",
)
# The services the topology needs, and those that must report their health.
SERVICES = {"web", "migrate", "postgres", "redis", "nginx"}
LONG_RUNNING = {"web", "postgres", "redis", "nginx"}
ENV_READERS = {"env_str", "env_bool", "env_int", "env_list", "env_secret"}
ENV_LINE = re.compile(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)[^}]*\}")
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
UPSTREAM_SERVER = re.compile(r"server\s+([\w.-]+):(\d+)")


def settings_variables(source: str) -> set[str]:
    """Names of the environment variables a settings module reads: the first,
    literal argument of the env_* helpers and of os.environ.get / os.getenv."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if called in ENV_READERS or ast.unparse(func) in {"os.environ.get", "os.getenv"}:
            names.add(first.value)
    names.update(
        node.slice.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Subscript)
        and ast.unparse(node.value) == "os.environ"
        and isinstance(node.slice, ast.Constant)
    )
    return names


def env_example(text: str) -> tuple[dict[str, str], set[str]]:
    """(the variables set, those only documented in a `# NAME=` comment)."""
    values, documented = {}, set()
    for line in text.splitlines():
        match = ENV_LINE.match(line)
        if match and match.group(1):
            documented.add(match.group(2))
        elif match:
            values[match.group(2)] = match.group(3)
    return values, documented


def module_defines(path: Path, name: str) -> bool:
    """Whether the module at `path` binds `name` at top level."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return True
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return True
    return False


def dockerfile_cmd(text: str) -> list[str]:
    """The exec-form CMD of a Dockerfile (the last one wins)."""
    commands = [line[3:].strip() for line in text.splitlines() if line.startswith("CMD ")]
    return yaml.safe_load(commands[-1]) if commands else []


def option(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command[:-1] else None


def runs_daphne(command: list[str]) -> bool:
    """Daphne's command: `python -m chatsite.serve` (on uvloop) or `daphne`."""
    if command[:1] and Path(command[0]).name == "daphne":
        return True
    return (
        len(command) > 2
        and Path(command[0]).name.startswith("python")
        and command[1:3] == ["-m", "chatsite.serve"]
    )


def daphne_port(command: list[str]) -> str | None:
    """The port of `-p PORT` or of an endpoint `-e tcp:port=PORT:...`."""
    endpoint = option(command, "-e") or ""
    fields = dict(part.split("=", 1) for part in endpoint.split(":")[1:] if "=" in part)
    return option(command, "-p") or fields.get("port")


def check(base_dir: Path = BASE_DIR) -> list[str]:
    """Every problem found, as a sentence; empty when the files agree."""
    missing = [name for name in FILES if not (base_dir / name).exists()]
    if missing:
        return [f"missing file: {name}" for name in missing]
    compose_text = (base_dir / "docker-compose.yml").read_text()
    compose = yaml.safe_load(compose_text)
    services = compose.get("services", {})
    env, documented = env_example((base_dir / ".env.example").read_text())
    read = settings_variables((base_dir / "chatsite/settings.py").read_text())
    interpolated = set(INTERPOLATION.findall(compose_text))
    problems = []

    # Variables: .env.example <-> settings, and compose's own interpolations.
    for name in sorted(read - env.keys() - documented):
        problems.append(f".env.example lacks {name}, which chatsite/settings.py reads")
    for name in sorted(env.keys() - read - interpolated):
        problems.append(f".env.example sets {name}, which neither the settings nor compose read")
    for name in sorted(interpolated - env.keys()):
        problems.append(f"docker-compose.yml interpolates ${{{name}}}, not set in .env.example")

    # Services, their references and healthchecks.
    for name in sorted(SERVICES - services.keys()):
        problems.append(f"docker-compose.yml has no `{name}` service")
    for name, service in services.items():
        for target in service.get("depends_on", {}) or {}:
            if target not in services:
                problems.append(f"{name} depends on `{target}`, which is not a service")
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                if not (base_dir / source).exists():
                    problems.append(f"{name} mounts {source}, which does not exist")
            elif source not in (compose.get("volumes") or {}):
                problems.append(f"{name} mounts volume `{source}`, not declared under volumes:")
        healthcheck = service.get("healthcheck", {})
        if name in LONG_RUNNING and (not healthcheck.get("test") or healthcheck.get("disable")):
            problems.append(f"{name} has no healthcheck")
    if problems and SERVICES - services.keys():
        return problems

    # The web command: Daphne serving an ASGI application that exists.
    dockerfile = (base_dir / "Dockerfile").read_text()
    command = services["web"].get("command") or dockerfile_cmd(dockerfile)
    if isinstance(command, str):
        command = command.split()
    web_port = daphne_port(command)
    target = command[-1] if command else ""
    if not runs_daphne(command) or ":" not in target:
        problems.append(
            f"the web command is not `python -m chatsite.serve ... module:attribute`: {command}"
        )
    else:
        module, attribute = target.split(":", 1)
        module_path = base_dir / (module.replace(".", "/") + ".py")
        if not module_path.exists() or not module_defines(module_path, attribute):
            problems.append(f"the web command serves {target}, which does not exist")
        if "--proxy-headers" not in command:
            problems.append("the web command lacks --proxy-headers (it runs behind nginx)")
    if web_port not in {str(port) for port in services["web"].get("expose", [])}:
        problems.append(f"web does not expose the port Daphne listens on ({web_port})")
    healthcheck_source = (base_dir / "deploy/healthcheck.py").read_text()
    if f":{web_port}/healthz" not in healthcheck_source:
        problems.append(f"deploy/healthcheck.py does not probe /healthz on port {web_port}")
    if '"healthz"' not in (base_dir / "chatsite/urls.py").read_text():
        problems.append("chatsite/urls.py has no healthz route")

    # nginx: its placeholders filled, its upstream the web service's port.
    nginx_env = {key: str(value) for key, value in services["nginx"].get("environment", {}).items()}
    template = (base_dir / "deploy/nginx.conf.template").read_text()
    for name in sorted(set(PLACEHOLDER.findall(template)) - nginx_env.keys()):
        problems.append(f"nginx's environment lacks {name}, a placeholder of the template")
    upstreams = UPSTREAM_SERVER.findall(nginx_env.get("CHAT_UPSTREAM_SERVERS", ""))
    if not upstreams:
        problems.append("CHAT_UPSTREAM_SERVERS names no `server host:port;`")
    for host, port in upstreams:
        if host != "web" or port != web_port:
            problems.append(f"nginx's upstream {host}:{port} is not web:{web_port}")
    # nginx resolves `web` once, when it starts: an upgrade that recreates the
    # web containers (new addresses) must restart it too.
    on_web = (services["nginx"].get("depends_on") or {}).get("web")
    if not isinstance(on_web, dict) or on_web.get("restart") is not True:
        problems.append("nginx does not restart with web (depends_on: web: restart: true)")
    static_root = nginx_env.get("CHAT_STATIC_ROOT", "")
    migrate_mounts = {
        volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
        for volume in services["migrate"].get("volumes", [])
    }
    if static_root not in migrate_mounts:
        problems.append(f"nginx serves {static_root}, where migrate publishes no static files")

    # The URLs the app gets point at the compose services.
    database = urlsplit(env.get("DATABASE_URL", ""))
    postgres_env = services["postgres"].get("environment", {})
    if (database.hostname, database.port) != ("postgres", 5432):
        problems.append("DATABASE_URL in .env.example does not point at postgres:5432")
    if database.username != postgres_env.get("POSTGRES_USER"):
        problems.append("DATABASE_URL's user is not the postgres service's POSTGRES_USER")
    if database.path.lstrip("/") != postgres_env.get("POSTGRES_DB"):
        problems.append("DATABASE_URL's database is not the postgres service's POSTGRES_DB")
    if database.password != env.get("POSTGRES_PASSWORD"):
        problems.append("DATABASE_URL's password is not POSTGRES_PASSWORD")
    if urlsplit(env.get("REDIS_URL", "")).hostname != "redis":
        problems.append("REDIS_URL in .env.example does not point at the redis service")
    if env.get("NUM_PROXIES") != "1":
        problems.append("NUM_PROXIES must be 1 behind nginx (one proxy hop)")
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(f"check_compose: {problem}", file=sys.stderr)
    if not problems:
        print("check_compose: docker-compose.yml, .env.example and nginx agree with the code")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
