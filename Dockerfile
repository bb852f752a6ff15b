# The escalation-stream worker: `docker build -t escalation-stream .`
# Configuration is by environment (see the README); KAFKA_BOOTSTRAP_SERVERS is required here,
# since the embedded broker (the `embedded` extra) is not installed in this image.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, non-root uid; the state root is created (and owned) in the image so that a new
# named volume mounted there starts with the same owner.
RUN groupadd --system --gid 10001 escalations \
    && useradd --system --uid 10001 --gid escalations --create-home \
        --home-dir /home/escalations --shell /usr/sbin/nologin escalations \
    && mkdir -p /var/lib/escalations \
    && chown escalations:escalations /var/lib/escalations

# A regular (non-editable) install: the wheel force-includes schemas/ as streams/_schemas and
# ships streams/samples/, so the source tree is not needed at run time.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams/ streams/
COPY schemas/ schemas/
RUN pip install . && rm -rf /src

ENV ESCALATIONS_STATE_ROOT=/var/lib/escalations \
    ESCALATIONS_WEB_BIND=0.0.0.0
VOLUME ["/var/lib/escalations"]

# Faust keeps its data directory (escalation-stream-data) relative to the working directory.
WORKDIR /home/escalations
USER 10001:10001
EXPOSE 6066

ENTRYPOINT ["escalations"]
CMD ["worker"]
