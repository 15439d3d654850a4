# NVIDIA's Triton with native backends (ONNX Runtime, TensorRT, Python), plus what the model
# repository needs beyond them: the `tokenizer` Python-based backend and the `tokenizers` library.
# RELEASE is shared with the export job's TensorRT image (docker-compose.yml NGC_RELEASE).
ARG RELEASE=24.10
FROM nvcr.io/nvidia/tritonserver:${RELEASE}-py3
RUN pip install --no-cache-dir "tokenizers>=0.20" "numpy<2"
COPY backends/tokenizer/model.py /opt/tritonserver/backends/tokenizer/model.py
