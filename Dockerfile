# The server in a container: docker build -t commandproto . (see
# docs/howto/operating.rst, "Containers").
FROM python:3.11-slim

# Install the package (and the metrics extra) system-wide, without caches.
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir '.[metrics]' && rm -rf /src

# A user of its own: nothing runs as root.
RUN useradd --system --no-create-home --shell /usr/sbin/nologin commandproto
USER commandproto
WORKDIR /tmp

EXPOSE 12345
# The drain (--shutdown-timeout 5) fits in docker stop's 10 s grace.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-m", "commandproto.client", "-e", "Are you there?"]

# Every interface inside the container: publish the port to choose who reaches it.
ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "commandserver"]
CMD ["--listen", "tcp:12345", "--log-format", "json", "--shutdown-timeout", "5"]
