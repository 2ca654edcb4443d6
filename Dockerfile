FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY crm_core crm_core
COPY handlers handlers
COPY models models
COPY tasks tasks
COPY crm_app crm_app
# the message catalogs are compiled before the install, which packages them (crm_core/locale)
RUN pip install --no-cache-dir "babel>=2.16,<3" && pybabel compile -d crm_core/locale -D crm \
    && pip install --no-cache-dir . && useradd --system crm
USER crm
EXPOSE 8005
CMD ["crm", "serve", "--host", "0.0.0.0", "--port", "8005"]
