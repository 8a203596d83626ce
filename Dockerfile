# syntax=docker/dockerfile:1
# jwks-mirror: build a venv in one stage, copy it into a clean slim image in the next.
# Both stages use the same base, so the venv's interpreter path exists at run time.

FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/jwks-mirror
COPY pyproject.toml README.md ./
COPY jwks_mirror ./jwks_mirror
# pip compiles the bytecode here: the root filesystem is read-only at run time. No "fast"
# extra: the image runs the asyncio loop that CI tests, not uvloop (docs/benchmarks.md, uvloop).
RUN /opt/jwks-mirror/bin/pip install .

FROM python:3.12.8-slim-bookworm
LABEL org.opencontainers.image.title="jwks-mirror" \
      org.opencontainers.image.description="Mirror in-mesh JWKS endpoints onto a plain port istiod can reach" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH="/opt/jwks-mirror/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JWKS_MIRROR_CONFIG=/etc/jwks-mirror/config.yaml
COPY --from=build /opt/jwks-mirror /opt/jwks-mirror
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd; matches the
# Deployment's runAsUser/runAsGroup.
USER 10001:10001
EXPOSE 8080 9090
# Exec form: the process is PID 1 and gets SIGTERM directly; no shell is needed at run time.
ENTRYPOINT ["/opt/jwks-mirror/bin/jwks-mirror", "serve"]
CMD ["--config", "/etc/jwks-mirror/config.yaml"]
