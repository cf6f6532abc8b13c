# The chat server's image: Daphne serving chatsite.asgi, static files collected
# at build time (WhiteNoise serves them when nginx does not). docker-compose.yml
# runs it as `web` (several replicas) and as the one-shot `migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The server runs as an unprivileged user that cannot write to its own code.
RUN groupadd --system chat \
    && useradd --system --gid chat --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin chat

WORKDIR /app

# Dependencies first, pinned exactly: this layer is rebuilt only when they change.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Settings refuse to load without secrets when DEBUG is off; these dummies exist
# only for this build step and are not in the image's environment.
RUN DEBUG=0 SECRET_KEY=collectstatic-build-only JWT_SIGNING_KEY=collectstatic-build-only \
    python manage.py collectstatic --noinput

# The `migrate` service copies the collected files here, into the volume that
# nginx serves; a new named volume takes this directory's owner.
RUN mkdir -p /srv/static && chown chat:chat /srv/static

USER chat
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "deploy/healthcheck.py"]

# --proxy-headers: the client's address and scheme come from nginx's
# X-Forwarded-For/-Proto. Only nginx can reach this port (it is not published).
# backlog=2048: Twisted's default of 50 pending connections turned a reconnect
# storm (every client of a restarted process at once) into refused connects
# and retries (docs/performance.md).
# chatsite.serve: Daphne's own command line, on uvloop's event loop.
CMD ["python", "-m", "chatsite.serve", "-e", "tcp:port=8000:interface=0.0.0.0:backlog=2048", "--proxy-headers", "chatsite.asgi:application"]
