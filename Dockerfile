# cohort-match API: slim, non-root, uvicorn. Configure with COHORT_MATCH_* variables (README).
# Build: docker build -t cohort-match .
# Run:   docker run -p 8000:8000 -e COHORT_MATCH_FHIR_BASE_URL=... -e COHORT_MATCH_AUTH_JWKS_FILE=... cohort-match
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY terminology ./terminology
COPY trials ./trials
COPY demo ./demo
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 cohort
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER cohort
WORKDIR /home/cohort
ENV COHORT_MATCH_HOST=0.0.0.0 \
    COHORT_MATCH_PORT=8000 \
    COHORT_MATCH_DATABASE_URL=sqlite:////home/cohort/cohort-match.db
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["cohort-match"]
CMD ["serve"]
