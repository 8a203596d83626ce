# syntax=docker/dockerfile:1
# jwks-mirror: build a venv in one stage, copy it into a clean slim image in the next.
# Both stages use the same base, so the venv's interpreter path exists at run time.
#
# Supply chain: the base is pinned by digest (the tag is only for people), and every Python
# package comes from requirements/*.lock with --require-hashes, as wheels. docs/image.md says
# how to build, push, update the digest and regenerate the locks; tools/image-env runs these
# same pip steps without Docker in CI and writes the image's CycloneDX SBOM.

FROM python:3.12.8-slim-bookworm@sha256:2199a62885a12290dc9c5be3ca0681d367576ab7bf037da120e564723292a2f0 AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The build backend lives in its own venv, so the image's venv holds only what runs.
COPY requirements/build.lock requirements/runtime.lock ./requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --only-binary :all: -r requirements/build.lock \
    && python -m venv /opt/jwks-mirror \
    && /opt/jwks-mirror/bin/pip install --require-hashes --only-binary :all: \
        -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY jwks_mirror ./jwks_mirror
# --no-deps: every dependency came from the lock above. The event loop is uvloop, locked in
# runtime.lock as a dependency: `serve` runs on it whenever it is importable, so the image
# always does, and CI runs every subprocess test on this same environment (docs/image.md;
# why uvloop: docs/benchmarks.md). pip compiles the bytecode here: the root filesystem is
# read-only at run time.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/jwks-mirror/bin/pip install --no-deps /tmp/wheels/jwks_mirror-*.whl

FROM python:3.12.8-slim-bookworm@sha256:2199a62885a12290dc9c5be3ca0681d367576ab7bf037da120e564723292a2f0
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
