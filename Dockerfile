# One image for the API, the migration job and the workers.
# TORCH_INDEX selects the wheel: the CUDA build for GPU workers (default), or "cpu" for the API and CPU workers.
FROM python:3.11-slim
ARG TORCH_INDEX=cu128
WORKDIR /srv/modelpress
RUN pip install --no-cache-dir "torch==2.13.0" --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY core ./core
COPY worker ./worker
COPY compression ./compression
COPY modelpress ./modelpress
COPY migrations ./migrations
RUN pip install --no-cache-dir -e ".[server]"
ENV MODELPRESS_DATA_DIR=/var/lib/modelpress
VOLUME /var/lib/modelpress
EXPOSE 8000
CMD ["modelpress", "up", "--host", "0.0.0.0"]
