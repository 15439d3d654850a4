# The offline export job: a diffusers checkpoint folder -> ONNX -> the shared model repository.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY frontend ./frontend
COPY export ./export
COPY backends ./backends
RUN pip install --no-cache-dir ".[export]"
ENTRYPOINT ["imagegen", "export"]
