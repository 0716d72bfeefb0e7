# cohort-match: slim, non-root. Configuration by COHORT_MATCH_* environment variables (README).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY terminology ./terminology
COPY trials ./trials
COPY demo ./demo
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 cohort
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER cohort
WORKDIR /home/cohort
ENTRYPOINT ["cohort-match"]
CMD ["screen", "--trial", "NCT06946485", "--as-of", "2026-11-20"]
