# The runtime and the HTTP server, without torch: `docker build -t hmer .`, then
#   docker run --rm -p 8000:8000 hmer                       # hmer-serve on port 8000 (the pad at /)
#   docker run --rm -v "$PWD:/in:ro" hmer hmer-run /in/photo.png
# The bundled model's weights are CC BY-NC-SA 3.0 (trained on CROHME): see /app/hmer_runtime/models/default/LICENSE.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY hmer_runtime hmer_runtime
COPY hmer_train hmer_train
COPY export export
COPY benchmarks benchmarks
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/hmer-*.whl)[serve]" && rm -rf /wheels
RUN useradd --create-home hmer
USER hmer
WORKDIR /home/hmer
EXPOSE 8000
CMD ["hmer-serve", "--host", "0.0.0.0", "--port", "8000"]
