# syntax=docker/dockerfile:1
# The paxos-commit image: one image for both components (the Helm chart in helm/paxos-commit
# runs `paxos-commit acceptor ...`, `paxos-commit coordinator ...` and the optional
# `paxos-commit console` from it).
#
#   docker build -t paxos-commit:0.1.0 .
#
# Runs as an unprivileged user (uid/gid 10001, as the chart's securityContext expects) and
# works with a read-only root filesystem: nothing is written outside the mounted data
# volume and /tmp.

FROM python:3.11-slim AS build
WORKDIR /src
# Build wheels for the project and its server dependencies; the runtime stage installs
# them without compilers or network.
COPY pyproject.toml README.md ./
COPY rm_sdk/ rm_sdk/
COPY acceptor/ acceptor/
COPY coordinator/ coordinator/
COPY paxos_commit/ paxos_commit/
# The otel extra too: traces stay off unless OTEL_* variables configure them.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[server,otel]'

FROM python:3.11-slim
RUN groupadd --system --gid 10001 paxos \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/paxos-commit --no-create-home \
        --shell /usr/sbin/nologin paxos \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/paxos-commit
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels 'paxos-commit[server,otel]'
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAXOS_COMMIT_DATA_DIR=/var/lib/paxos-commit/data
WORKDIR /var/lib/paxos-commit
USER 10001:10001
# 7700: acceptor gRPC, 7800: coordinator gRPC, 8080: the console's HTTP, 9090: Prometheus /metrics;
# 7701, 7801: plain-text health (probes, with TLS on).
EXPOSE 7700 7701 7800 7801 8080 9090
ENTRYPOINT ["paxos-commit"]
CMD ["--help"]
