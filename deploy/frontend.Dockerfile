# The frontend alone: no torch, no Triton; it talks to the `triton` service over HTTP and keeps its
# state in the `postgres` service (the `postgres` extra: psycopg).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY frontend ./frontend
COPY export ./export
COPY families ./families
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir ".[postgres]"
ENV IMAGEGEN_HOST=0.0.0.0 IMAGEGEN_HOME=/state
EXPOSE 8000
CMD ["imagegen", "serve"]
