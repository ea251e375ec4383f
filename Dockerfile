# One image for every bedside service (engine, replay, ward page, jobs).
# The CPU build of torch comes from PyTorch's index; bedside pins torch==2.13.0.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/bedside
COPY pyproject.toml README.md LICENSE ./
COPY bedside bedside
COPY schemas schemas
COPY training training
COPY replay replay
COPY engine engine
COPY ward ward
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
    && useradd --create-home --uid 10001 bedside
USER bedside
ENTRYPOINT []
CMD ["bedside", "--help"]
