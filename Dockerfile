# One image for gateway, workers and beat (the last stage, built by default); Flower's image
# adds Flower (target `flower`). docker-compose.yml picks the command.
FROM python:3.11-slim AS base

RUN useradd --create-home --uid 10001 integration \
    && mkdir -p /var/lib/integration && chown integration /var/lib/integration
WORKDIR /app
COPY setup.cfg pyproject.toml README.md celeryconfig.py constraints.txt ./
COPY integration ./integration
COPY tasks ./tasks
# The runtime (gateway, workers, beat) and the tracing SDK, used only when
# INTEGRATION_OTLP_ENDPOINT is set, at the versions the tests ran with.
RUN pip install --no-cache-dir -c constraints.txt '.[tracing]'
ENV INTEGRATION_ENV=production

FROM base AS flower
RUN pip install --no-cache-dir -c constraints.txt '.[flower]'
USER integration
EXPOSE 5555
CMD ["integration", "flower", "--port=5555", "--address=0.0.0.0"]

FROM base AS service
USER integration
EXPOSE 8000
CMD ["integration", "serve", "--host", "0.0.0.0", "--port", "8000"]
