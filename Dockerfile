# quartchat: build with `docker compose build` (or `docker build -t quartchat .`); see docs/deploy.md.

# Build stage: the pinned dependencies and the package go into a venv that the final stage copies
# whole, so pip's build of quartchat, binutils and apt's lists never reach the runtime image.
FROM python:3.12-slim AS build

# binutils only for `strip`: manylinux wheels ship their extensions with debug symbols.
# Debian's current package is what we want, hence no version pin.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv --without-pip /opt/venv

# Dependencies before the code: this layer is rebuilt only when requirements.txt changes.
# --no-compile: bytecode for every module of every dependency (SQLAlchemy's dialects, its ORM,
# alembic's autogenerate...) is a third of the venv; the step after the package compiles only
# what quartchat imports.
COPY requirements.txt /src/
# The libraries' own test suites go too (greenlet's, aiosqlite's; SQLAlchemy's and Alembic's
# testing plugins, which only their dialects' `provision` modules import): ~3.4 MB never run.
RUN pip --python /opt/venv/bin/python install --no-cache-dir --no-compile -r /src/requirements.txt \
 && find /opt/venv -name '*.so' -exec strip --strip-unneeded {} + \
 && find /opt/venv \( -name '*.c' -o -name '*.h' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pyi' \) -delete \
 && site=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && rm -rf "$site/greenlet/tests" "$site/aiosqlite/tests" "$site/sqlalchemy/testing" "$site/alembic/testing"

COPY pyproject.toml README.md /src/
COPY quartchat /src/quartchat
# Importing what the service runs (both database drivers and both servers included: the service
# imports only the one SERVER names) writes exactly that bytecode:
# the read-only container could not write it at run time, and would compile it at every start.
RUN pip --python /opt/venv/bin/python install --no-cache-dir --no-compile --no-deps /src \
 && /opt/venv/bin/python -c "import quartchat.__main__, quartchat.db.migrate, alembic.command, \
sqlalchemy.dialects.sqlite.aiosqlite, sqlalchemy.dialects.postgresql.asyncpg, argon2, quart_auth, \
quartchat.serving.hypercorn, quartchat.serving.uvicorn, uvicorn.lifespan.on"


FROM python:3.12-slim

# A fixed numeric uid/gid, so volume ownership and Kubernetes' runAsNonRoot can rely on it.
# /data is the app user's alone (a new named volume copies this mode): it holds every message.
RUN groupadd --system --gid 10001 quartchat \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin quartchat \
 && mkdir -m 0700 /data && chown 10001:10001 /data

COPY --from=build /opt/venv /opt/venv

# DATA_DIR: where quartchat will keep its data (mount a volume there; nothing is stored yet).
# Secrets and settings come from the environment at run time (compose's env_file), never from here.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_HOST=0.0.0.0 \
    APP_PORT=8333 \
    DATA_DIR=/data

WORKDIR /app
USER 10001:10001
EXPOSE 8333

# No curl in the image: the check is a few lines of the Python that is already there, straight to
# the loopback (so no HTTP_PROXY setting can send it elsewhere). /health never calls the upstream.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import http.client, os, sys; c = http.client.HTTPConnection('127.0.0.1', int(os.environ.get('APP_PORT', '8333')), timeout=2); c.request('GET', '/health'); sys.exit(c.getresponse().status != 200)"]

# The console script, not a server's CLI: it runs the server SERVER names (hypercorn unless set to
# uvicorn), APP_WORKERS worker processes and quartchat's SIGTERM handling (a grace period for
# in-flight streams).
CMD ["quartchat"]
