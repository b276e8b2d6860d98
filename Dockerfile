# One image for every zhizao service: `zhizao …` is the command (deploy/compose/compose.yaml
# gives each service its own). Multi-stage: the build stage installs the package into a
# virtual environment, the runtime stage copies only that venv onto a slim base and runs
# it as an unprivileged user. docs/operations.md says what was and was not run here.
#
#   docker build -t zhizao:0.1.0 .
#   docker run --rm zhizao:0.1.0 --help
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY zhizao ./zhizao
COPY edge ./edge
COPY ingest ./ingest
COPY platform_api ./platform_api
COPY dashboards ./dashboards
RUN python -m venv /opt/zhizao \
    && /opt/zhizao/bin/pip install --no-cache-dir . \
    && /opt/zhizao/bin/zhizao --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="zhizao" \
      org.opencontainers.image.description="智造 zhizao: edge, ingest, rollups, platform API and board" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid, so that volumes and bind mounts can be given to it (chown 10001).
RUN groupadd --system --gid 10001 zhizao \
    && useradd --system --uid 10001 --gid zhizao --home-dir /var/lib/zhizao \
       --create-home --shell /usr/sbin/nologin zhizao
COPY --from=build /opt/zhizao /opt/zhizao
ENV PATH=/opt/zhizao/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ZHIZAO_HEALTH_URL=http://127.0.0.1:8000/health
USER 10001:10001
WORKDIR /var/lib/zhizao
# Each service sets ZHIZAO_HEALTH_URL to its own /health (compose.yaml); the API's by default.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "zhizao.probe"]
ENTRYPOINT ["zhizao"]
CMD ["api", "run", "--host", "0.0.0.0"]
