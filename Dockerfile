# One image for gateway, workers and beat; docker-compose.yml picks the command.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 integration \
    && mkdir -p /var/lib/integration && chown integration /var/lib/integration
WORKDIR /app
COPY setup.cfg pyproject.toml README.md celeryconfig.py ./
COPY integration ./integration
COPY tasks ./tasks
RUN pip install --no-cache-dir .

USER integration
ENV INTEGRATION_ENV=production
EXPOSE 8000
CMD ["integration", "serve", "--host", "0.0.0.0", "--port", "8000"]
