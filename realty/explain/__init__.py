"""SHAP reports for the house-price models: explain (``explainer``, ``treeshap``), rank
(``ranking``), compare (``compare``), plot (``plots``), write (``report``) and log them on
registered versions (``versions``).

Takes the fitted model and the feature frame it sees, so it does not depend on the training
code's classes. Three ways to exact (path-dependent) TreeSHAP, picked by the tree estimator
found after unwrapping ``TransformedTargetRegressor`` and ``Pipeline`` layers:

| tree estimator | how |
|---|---|
| ``CatBoostRegressor`` | ``get_feature_importance(Pool(cat_features=...), type="ShapValues")``: |
|   | CatBoost's own exact TreeSHAP, native categoricals, ~3x faster than shap's wrapper |
| ``HistGradientBoostingRegressor`` with categorical splits | the numba TreeSHAP below: |
|   | shap.TreeExplainer ignores HGB's category bitsets and returns wrong values silently |
| any other tree model shap knows (HGB without categorical splits, forests, ...) | |
|   | ``shap.TreeExplainer`` (tree_path_dependent) |

For a ``Pipeline(encoder, ..., tree)`` the tree is explained on the encoder's output and each
output column is mapped back to the input column it came from (by ``get_feature_names_out``):
1:1 encoders (Ordinal, Target, scalers, passthrough) keep the feature; one-hot columns of one
feature are summed into it (SHAP values are additive). Every result is checked: base value +
sum of SHAP values must equal the model's raw prediction row by row, else ``ExplanationError``.

Time is bounded by the sample (at most ``sample_size`` rows, seeded; 2,000 take seconds, see
docs/explain.md) and by a deadline: rows go in chunks and the seconds per row measured so far
decide how many more fit in ``max_seconds``; the sample is cut there (``Explanation.truncated``).
CatBoost gets chunks of 5,000 rows (so 2,000 rows are one call) because each call pays a fixed
preparation (trees x leaves) that small chunks would repeat.

Plots draw on ``matplotlib.figure.Figure`` with an explicit Agg canvas: headless, thread-safe
(no pyplot state), and nothing to leak or close.
"""
