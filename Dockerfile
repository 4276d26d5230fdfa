# The notice-bus image used by compose.yaml: HQ tools, the tracker and country adapters.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV NOTICE_BUS_SCHEMA_DIR=/app/schemas
USER nobody
ENTRYPOINT ["notice-bus"]
