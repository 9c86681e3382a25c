"""TreeSHAP in numba for HistGradientBoosting models with categorical splits."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

from realty.explain.results import Chunk, ExplanationError

# --- HistGradientBoosting with categorical splits: TreeSHAP in numba ----------------------
#
# Algorithm 2 of Lundberg et al. (2018), "Consistent Individualized Feature Attribution for Tree
# Ensembles", written iteratively like shap's tree_shap.h; the only change is the split test,
# which follows sklearn's _predictor.pyx (NaN and unknown categories go the missing way, known
# categories are looked up in the node's bitset). Checked against shap on numeric trees and by
# additivity on categorical ones (tests/realty/explain/test_explain.py).


def is_hgb(model: Any) -> bool:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return isinstance(model, HistGradientBoostingRegressor)


def hgb_has_categorical_splits(model: Any) -> bool:
    return any(
        bool(np.any(predictor.nodes["is_categorical"]))
        for iteration in model._predictors
        for predictor in iteration
    )


def hgb_tables(model: Any) -> dict[str, Any]:
    if model.n_trees_per_iteration_ != 1:
        raise ExplanationError("multi-output HistGradientBoosting models are not supported")
    predictors = [iteration[0] for iteration in model._predictors]
    trees = len(predictors)
    width = max(len(p.nodes) for p in predictors)
    left = np.full((trees, width), -1, dtype=np.int64)
    right = np.full((trees, width), -1, dtype=np.int64)
    feature = np.zeros((trees, width), dtype=np.int64)
    threshold = np.zeros((trees, width))
    missing_left = np.zeros((trees, width), dtype=np.bool_)
    is_categorical = np.zeros((trees, width), dtype=np.bool_)
    bitset = np.zeros((trees, width), dtype=np.int64)
    cover = np.zeros((trees, width))
    value = np.zeros((trees, width))
    bitsets = []
    offset = 0
    depth = 0
    expected = float(np.ravel(model._baseline_prediction)[0])
    for t, predictor in enumerate(predictors):
        nodes = predictor.nodes
        n = len(nodes)
        leaf = nodes["is_leaf"].astype(bool)
        left[t, :n] = np.where(leaf, -1, nodes["left"].astype(np.int64))
        right[t, :n] = np.where(leaf, -1, nodes["right"].astype(np.int64))
        feature[t, :n] = nodes["feature_idx"]
        threshold[t, :n] = nodes["num_threshold"]
        missing_left[t, :n] = nodes["missing_go_to_left"].astype(bool)
        is_categorical[t, :n] = nodes["is_categorical"].astype(bool)
        bitset[t, :n] = nodes["bitset_idx"].astype(np.int64) + offset
        cover[t, :n] = nodes["count"]
        value[t, :n] = nodes["value"]
        depth = max(depth, int(nodes["depth"].max()))
        bitsets.append(np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32))
        offset += bitsets[-1].shape[0]
        expected += float((nodes["value"][leaf] * nodes["count"][leaf]).sum() / nodes["count"][0])
    raw_bitsets = np.concatenate(bitsets) if offset else np.zeros((1, 8), dtype=np.uint32)
    known, feature_map = model._bin_mapper.make_known_categories_bitsets()
    known = np.asarray(known, dtype=np.uint32)
    if known.shape[0] == 0:
        known = np.zeros((1, 8), dtype=np.uint32)
    # HGB reorders its input (categorical columns first) when it encodes categories itself.
    order = np.arange(model.n_features_in_)
    preprocessor = getattr(model, "_preprocessor", None)
    if preprocessor is not None:
        order = np.empty(model.n_features_in_, dtype=np.int64)
        for name, _, columns in preprocessor.transformers_:
            if name in preprocessor.output_indices_ and name != "remainder":
                selected = np.arange(model.n_features_in_)[columns]
                order[preprocessor.output_indices_[name]] = selected
    tables = (
        depth + 1,
        left,
        right,
        feature,
        threshold,
        missing_left,
        is_categorical,
        bitset,
        np.ascontiguousarray(raw_bitsets),
        np.ascontiguousarray(known),
        np.asarray(feature_map, dtype=np.int64),
        cover,
        value,
    )
    return {"tables": tables, "expected": expected, "order": order}


def hgb_chunk(model: Any, x: Any, state: dict[str, Any]) -> Chunk:
    internal = np.ascontiguousarray(model._preprocess_X(x, reset=False), dtype=np.float64)
    # the kernel releases the GIL: rows are split over threads (one per CPU, >= 64 rows each)
    workers = min(cpus(), 8, max(1, len(internal) // 64))
    if workers == 1:
        phi_internal = tree_shap(internal, *state["tables"])
    else:
        parts = np.array_split(internal, workers)
        with ThreadPoolExecutor(workers, thread_name_prefix="treeshap") as pool:
            done = pool.map(lambda part: tree_shap(part, *state["tables"]), parts)
            phi_internal = np.vstack(list(done))
    phi = np.zeros_like(phi_internal)
    phi[:, state["order"]] = phi_internal
    return Chunk(phi, state["expected"])


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@numba.njit(cache=True, nogil=True)
def _extend(path_feature, path_zero, path_one, path_weight, at, depth, zero, one, feature):
    path_feature[at + depth] = feature
    path_zero[at + depth] = zero
    path_one[at + depth] = one
    path_weight[at + depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        path_weight[at + i + 1] += one * path_weight[at + i] * (i + 1) / (depth + 1)
        path_weight[at + i] = zero * path_weight[at + i] * (depth - i) / (depth + 1)


@numba.njit(cache=True, nogil=True)
def _unwind(path_feature, path_zero, path_one, path_weight, at, depth, k):
    one = path_one[at + k]
    zero = path_zero[at + k]
    next_one = path_weight[at + depth]
    for i in range(depth - 1, -1, -1):
        if one != 0.0:
            previous = path_weight[at + i]
            path_weight[at + i] = next_one * (depth + 1) / ((i + 1) * one)
            next_one = previous - path_weight[at + i] * zero * (depth - i) / (depth + 1)
        else:
            path_weight[at + i] = path_weight[at + i] * (depth + 1) / (zero * (depth - i))
    for i in range(k, depth):
        path_feature[at + i] = path_feature[at + i + 1]
        path_zero[at + i] = path_zero[at + i + 1]
        path_one[at + i] = path_one[at + i + 1]


@numba.njit(cache=True, nogil=True)
def _unwound_sum(path_zero, path_one, path_weight, at, depth, k):
    one = path_one[at + k]
    zero = path_zero[at + k]
    next_one = path_weight[at + depth]
    total = 0.0
    if one != 0.0:
        for i in range(depth - 1, -1, -1):
            part = next_one * (depth + 1) / ((i + 1) * one)
            total += part
            next_one = path_weight[at + i] - part * zero * (depth - i) / (depth + 1)
    elif zero != 0.0:
        for i in range(depth - 1, -1, -1):
            total += path_weight[at + i] * (depth + 1) / (zero * (depth - i))
    return total


@numba.njit(cache=True, nogil=True)
def _goes_left(
    value, t, node, threshold, missing_left, is_categorical, bitset, raw_bits, known_bits, known_row
):
    if np.isnan(value):
        return missing_left[t, node]
    if is_categorical[t, node]:
        if value < 0.0 or value >= 256.0:
            return missing_left[t, node]
        category = int(value)
        if (raw_bits[bitset[t, node], category >> 5] >> (category & 31)) & 1:
            return True
        if (known_bits[known_row, category >> 5] >> (category & 31)) & 1:
            return False
        return missing_left[t, node]  # a category unseen in training counts as missing
    return value <= threshold[t, node]


@numba.njit(cache=True, nogil=True)
def tree_shap(
    x,
    max_depth,
    left,
    right,
    feature,
    threshold,
    missing_left,
    is_categorical,
    bitset,
    raw_bits,
    known_bits,
    feature_map,
    cover,
    value,
):
    rows, columns = x.shape
    phi = np.zeros((rows, columns))
    size = (max_depth + 3) * (max_depth + 4) // 2 + 4
    path_feature = np.full(size, -1, dtype=np.int64)
    path_zero = np.zeros(size)
    path_one = np.zeros(size)
    path_weight = np.zeros(size)
    stack = 2 * max_depth + 4
    stack_node = np.zeros(stack, dtype=np.int64)
    stack_depth = np.zeros(stack, dtype=np.int64)
    stack_at = np.zeros(stack, dtype=np.int64)
    stack_zero = np.zeros(stack)
    stack_one = np.zeros(stack)
    stack_feature = np.zeros(stack, dtype=np.int64)
    for r in range(rows):
        for t in range(left.shape[0]):
            stack_node[0] = 0
            stack_depth[0] = 0
            stack_at[0] = 0
            stack_zero[0] = 1.0
            stack_one[0] = 1.0
            stack_feature[0] = -1
            top = 1
            while top > 0:
                top -= 1
                node = stack_node[top]
                depth = stack_depth[top]
                parent_at = stack_at[top]
                at = parent_at + depth + 1
                for i in range(depth + 1):
                    path_feature[at + i] = path_feature[parent_at + i]
                    path_zero[at + i] = path_zero[parent_at + i]
                    path_one[at + i] = path_one[parent_at + i]
                    path_weight[at + i] = path_weight[parent_at + i]
                _extend(
                    path_feature,
                    path_zero,
                    path_one,
                    path_weight,
                    at,
                    depth,
                    stack_zero[top],
                    stack_one[top],
                    stack_feature[top],
                )
                if left[t, node] < 0:
                    leaf_value = value[t, node]
                    for i in range(1, depth + 1):
                        w = _unwound_sum(path_zero, path_one, path_weight, at, depth, i)
                        phi[r, path_feature[at + i]] += (
                            w * (path_one[at + i] - path_zero[at + i]) * leaf_value
                        )
                    continue
                f = feature[t, node]
                known_row = feature_map[f] if f < feature_map.shape[0] else 0
                if _goes_left(
                    x[r, f],
                    t,
                    node,
                    threshold,
                    missing_left,
                    is_categorical,
                    bitset,
                    raw_bits,
                    known_bits,
                    known_row,
                ):
                    hot = left[t, node]
                    cold = right[t, node]
                else:
                    hot = right[t, node]
                    cold = left[t, node]
                incoming_zero = 1.0
                incoming_one = 1.0
                k = 0
                while k <= depth:
                    if path_feature[at + k] == f:
                        break
                    k += 1
                if k != depth + 1:
                    incoming_zero = path_zero[at + k]
                    incoming_one = path_one[at + k]
                    _unwind(path_feature, path_zero, path_one, path_weight, at, depth, k)
                    depth -= 1
                cold_zero = cover[t, cold] / cover[t, node] * incoming_zero
                if cold_zero > 0.0:
                    stack_node[top] = cold
                    stack_depth[top] = depth + 1
                    stack_at[top] = at
                    stack_zero[top] = cold_zero
                    stack_one[top] = 0.0
                    stack_feature[top] = f
                    top += 1
                stack_node[top] = hot
                stack_depth[top] = depth + 1
                stack_at[top] = at
                stack_zero[top] = cover[t, hot] / cover[t, node] * incoming_zero
                stack_one[top] = incoming_one
                stack_feature[top] = f
                top += 1
    return phi
