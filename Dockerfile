# The notice-bus image used by compose.yaml: HQ tools, the tracker, country adapters (with every
# local-system plug-in of consumers/) and the dashboard. Everything is pinned: the base image by
# patch release, the build backend here, the runtime dependencies by requirements.lock.
# tests/test_image.py replays these steps (no Docker engine there) and loads every plug-in.

# Builds the wheels: notice-bus (the notice_bus package, with the built-in sql sink's entry
# point) and each local-system plug-in, a distribution of its own (consumers/*/pyproject.toml,
# each with its entry point in the notice_bus.local_systems group).
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /build
RUN pip install --no-cache-dir --disable-pip-version-check setuptools==84.2.1
COPY pyproject.toml README.md ./
COPY src ./src
COPY consumers ./consumers
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
        --wheel-dir /wheels . consumers/legacy_postgres consumers/file_drop consumers/rest_api

FROM python:3.11.14-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The dependencies first, in their own layer: it survives changes to our code.
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock
COPY --from=build /wheels /wheels
# notice-bus and every plug-in. --no-deps: only the lock's versions; pip check fails the build
# if the lock misses one (or a plug-in's requirement on notice-bus is not met).
RUN pip install --no-deps /wheels/*.whl && pip check && rm -rf /wheels
COPY schemas ./schemas
ENV NOTICE_BUS_SCHEMA_DIR=/app/schemas
USER nobody
ENTRYPOINT ["notice-bus"]
