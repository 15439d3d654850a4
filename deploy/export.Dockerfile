# The offline export job on the GPU host: a diffusers checkpoint -> ONNX -> TensorRT plans in the
# shared model repository (`imagegen export --engine tensorrt`). NVIDIA's TensorRT image of the same
# release as the Triton image: a plan loads only in the TensorRT version that built it (24.10: 10.5).
ARG RELEASE=24.10
FROM nvcr.io/nvidia/tensorrt:${RELEASE}-py3
# The image's Python is 3.10 and the project's 3.11: uv brings 3.11, and TensorRT's Python bindings
# for it, of the image's TensorRT version, over the image's libraries.
ARG TENSORRT_BINDINGS=10.5.0
RUN pip install --no-cache-dir uv && uv venv --python 3.11 /venv
ENV PATH=/venv/bin:$PATH VIRTUAL_ENV=/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY frontend ./frontend
COPY export ./export
COPY families ./families
COPY benchmarks ./benchmarks
COPY backends ./backends
RUN uv pip install --no-cache ".[export]" "tensorrt-cu12-bindings==${TENSORRT_BINDINGS}"
ENTRYPOINT ["imagegen", "export", "--engine", "tensorrt"]
