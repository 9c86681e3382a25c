"""The 8x8 digits classifier the serving layer hosts for the course's digit clients."""

from importlib import metadata

import dagster as dg

from realty.settings import get_settings
from realty_assets.resources import MlflowResource

REQUIREMENTS = ("scikit-learn", "numpy")
SKOPS_TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._TemperatureScaling",
]

# Requested while it was never materialized and no run of it is going (on_missing() would not:
# it waits for the asset to *become* missing after the condition is first evaluated). After a
# failed run (MLflow away, say) again at each 10-minute mark, not at every tick. Its data is
# sklearn's fixed set: once trained it needs no training again.
WHILE_MISSING = (
    dg.AutomationCondition.missing()
    & ~dg.AutomationCondition.in_progress()
    & (
        ~dg.AutomationCondition.execution_failed()
        | dg.AutomationCondition.cron_tick_passed("*/10 * * * *")
    )
).with_label("while missing")


@dg.asset(
    group_name="vision",
    kinds={"mlflow", "scikitlearn"},
    description="A scikit-learn classifier of sklearn's 8x8 digits (values 0-16), logged to "
    "MLflow and released as the model 'digits' (alias 'production', or 'challenger' in a "
    "staged rollout once a production exists). Materialized by "
    "digits_automation_sensor while it has never been (a fresh stack serves digits without "
    "anyone launching it).",
    automation_condition=WHILE_MISSING,
)
def digits_model(mlflow: MlflowResource) -> dg.MaterializeResult:
    import mlflow as mlflow_api

    from realty.digits import train_digits
    from realty.model import registry, rollout

    settings, client = mlflow.settings, mlflow.client()
    result = train_digits(seed=settings.train_seed)
    mlflow_api.set_experiment(settings.digits_model_name)
    with mlflow_api.start_run(run_name="train digits"):
        mlflow_api.log_params(result.params)
        mlflow_api.log_metrics(result.metrics)
        info = mlflow_api.sklearn.log_model(
            sk_model=result.model,
            name="model",
            input_example=result.x_test[:2],
            # skops (MLflow's safe default format) must be told the calibration wrapper's types.
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            # Stated, not inferred: inference starts a subprocess that costs 30-70 s.
            pip_requirements=[f"{name}=={metadata.version(name)}" for name in REQUIREMENTS],
        )
    tags = {f"metric.{name}": f"{value:.6g}" for name, value in result.metrics.items()}
    version = registry.register(
        client,
        settings.digits_model_name,
        info,
        tags,
        f"8x8 digits, test accuracy {result.accuracy:.4f}",
        model_description="Digit (0-9) of an 8x8 image with values 0-16",
    )
    reason = f"accuracy {result.accuracy:.4f} on the held-out digits"
    rollout.release(
        settings, client, settings.digits_model_name, version.version, "dagster", reason
    )
    return dg.MaterializeResult(
        metadata={
            "version": version.version,
            "accuracy": result.accuracy,
            "macro_f1": result.macro_f1,
            "test_images": result.n_test,
        }
    )


digits_automation_sensor = dg.AutomationConditionSensorDefinition(
    "digits_automation_sensor",
    target=dg.AssetSelection.assets(digits_model),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=get_settings().sensor_interval_s,
    description="Evaluates digits_model's automation condition (on missing) in the daemon.",
)
