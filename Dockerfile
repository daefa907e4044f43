# NOME image: `nome serve` by default; compose.yaml picks a role or `nome migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system nome && useradd --system --gid nome --home-dir /app --no-create-home nome

WORKDIR /app

COPY pyproject.toml README.md ./
COPY nome_core ./nome_core
COPY nome_api ./nome_api
COPY projections ./projections

RUN pip install --no-cache-dir . && chown -R nome:nome /app

USER nome

EXPOSE 8080

CMD ["nome", "serve"]
