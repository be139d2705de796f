"""Regression models behind a predictor: lookup table, ridge, gradient-boosted trees, MLP.

Each model builds its own features from a batch of configs (`features`), fits on a feature
matrix and a (possibly log-transformed) target, and serialises to a JSON-able dict plus a
dict of numpy arrays (stored as safetensors): never pickle.

Measurements have heavy tails (contention on a shared device inflates some figures 1.5-4x),
so every model fits with a robust loss: Huber weights (IRLS) for ridge and the lookup table's
scale and offset, pseudo-Huber for the trees, Huber for the MLP. The Huber threshold comes
from the residual scale (MAD) of a linear pilot fit, so it adapts to the target's units.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from ofa.space import MBV3Space
from predictors.features import FEATURE_SETS, ArchArrays, _index, block_lookup, cost_tables, encode

HUBER_C = 1.345  # 95% efficiency under Gaussian noise


def robust_scale(residuals: np.ndarray) -> float:
    """Normal-consistent MAD of residuals (a floor keeps it positive on exact fits)."""
    mad = np.median(np.abs(residuals - np.median(residuals))) * 1.4826
    return float(max(mad, 1e-9 * (np.std(residuals) + 1.0), 1e-12))


class Standardizer:
    """Column means and standard deviations (constant columns keep a scale of 1)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        std = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(std > 1e-12, std, 1.0))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.std


def huber_ridge(
    Z: np.ndarray, y: np.ndarray, alpha: float, robust: bool, iterations: int = 50
) -> tuple[np.ndarray, float]:
    """Ridge (unpenalised intercept) on standardised `Z`, with Huber weights by IRLS when
    `robust`. Returns (coefficients, intercept)."""
    A = np.column_stack([Z, np.ones(len(Z))])
    penalty = alpha * np.eye(A.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(A.T @ A + penalty, A.T @ y)
    if robust:
        for _ in range(iterations):
            residuals = y - A @ w
            u = np.abs(residuals) / (HUBER_C * robust_scale(residuals))
            weights = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
            new = np.linalg.solve(A.T @ (A * weights[:, None]) + penalty, A.T @ (weights * y))
            done = np.max(np.abs(new - w)) <= 1e-8 * (1.0 + np.max(np.abs(w)))
            w = new
            if done:
                break
    return w[:-1], float(w[-1])


class Model(ABC):
    """A regression model with its own features. Subclasses register in `MODELS`."""

    kind: ClassVar[str]

    @abstractmethod
    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray: ...

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> Model: ...

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Hyper-parameters (JSON), enough to rebuild an unfitted copy."""

    @abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state: JSON-able part and arrays."""

    @abstractmethod
    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Model: ...

    def describe(self) -> str:
        return self.kind


# --- lookup table --------------------------------------------------------------------------
class LUTModel(Model):
    """OFA-style additive lookup table: a sub-network's latency is the sum of its layers'
    latencies (keyed by `LayerCost.shape`), then a per-device scale and offset fitted on
    end-to-end measurements absorb what the per-layer figures miss (launch gaps, caches)."""

    kind = "lut"

    def __init__(self, lut: Mapping[str, float], robust: bool = True) -> None:
        if not lut:
            raise ValueError("the lookup table is empty")
        self.lut = {str(k): float(v) for k, v in lut.items()}
        self.robust = robust
        self.scale, self.offset = 1.0, 0.0

    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
        t = cost_tables(space)
        values = np.array([self.lut.get(s, np.nan) for s in t.shapes])
        block_ids = block_lookup(arrays, space, t.shape_id + 1) - 1  # -1 at skipped slots
        fixed_ids = t.fixed_shape_id[_index(arrays.r, space.resolutions)]
        blocks = np.where(block_ids >= 0, values[block_ids], 0.0)
        fixed = values[fixed_ids]
        missing = np.isnan(blocks).any(axis=1) | np.isnan(fixed).any(axis=1)
        if missing.any():
            i = int(np.argmax(missing))
            used = np.concatenate([block_ids[i][block_ids[i] >= 0], fixed_ids[i]])
            lacking = sorted({t.shapes[j] for j in used if np.isnan(values[j])})
            raise ValueError(
                f"the lookup table has no latency for layer shape {lacking[0]!r} "
                f"({int(missing.sum())} of {len(missing)} configs use shapes it lacks)"
            )
        return (blocks.sum(axis=1) + fixed.sum(axis=1))[:, None]

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> LUTModel:
        s = X[:, 0]
        A = np.column_stack([s, np.ones(len(s))])
        w = np.linalg.lstsq(A, y, rcond=None)[0]
        if self.robust:
            for _ in range(50):
                residuals = y - A @ w
                u = np.abs(residuals) / (HUBER_C * robust_scale(residuals))
                weights = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
                w = np.linalg.lstsq(A * np.sqrt(weights)[:, None], y * np.sqrt(weights), rcond=None)[0]
        self.scale, self.offset = float(w[0]), float(w[1])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scale * X[:, 0] + self.offset

    def config(self) -> dict[str, Any]:
        return {"robust": self.robust}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"scale": self.scale, "offset": self.offset, "lut_ms": self.lut}, {}

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> LUTModel:
        self.lut = {str(k): float(v) for k, v in meta["lut_ms"].items()}
        self.scale, self.offset = float(meta["scale"]), float(meta["offset"])
        return self


# --- ridge ---------------------------------------------------------------------------------
class RidgeModel(Model):
    """Ridge regression on standardised features; Huber loss by IRLS when `robust`."""

    kind = "ridge"

    def __init__(self, feature_set: str = "all", alpha: float = 1.0, robust: bool = True) -> None:
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set = {feature_set!r} is not allowed; allowed: {', '.join(FEATURE_SETS)}")
        self.feature_set, self.alpha, self.robust = feature_set, float(alpha), bool(robust)
        self.scaler: Standardizer | None = None
        self.coef = np.zeros(0)
        self.intercept = 0.0

    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
        return encode(arrays, space, self.feature_set)

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> RidgeModel:
        self.scaler = Standardizer.fit(X)
        self.coef, self.intercept = huber_ridge(self.scaler(X), y, self.alpha, self.robust)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scaler(X) @ self.coef + self.intercept

    def config(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "alpha": self.alpha, "robust": self.robust}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"x_mean": self.scaler.mean, "x_std": self.scaler.std, "coef": self.coef}
        return {"intercept": self.intercept}, arrays

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> RidgeModel:
        self.scaler = Standardizer(arrays["x_mean"], arrays["x_std"])
        self.coef, self.intercept = np.asarray(arrays["coef"], np.float64), float(meta["intercept"])
        return self

    def describe(self) -> str:
        return f"ridge[{self.feature_set}{', huber' if self.robust else ''}]"


# --- gradient-boosted trees ----------------------------------------------------------------
class GBTModel(Model):
    """XGBoost trees (hist) with a pseudo-Huber loss. With `linear_base` the trees start from
    a robust ridge fit (XGBoost's base margin) and learn what it misses: costs are mostly
    additive, which trees alone approximate in steps. The Huber slope is the ridge residuals'
    robust scale. Saved in XGBoost's own JSON model format inside the predictor's JSON
    (portable, versioned by XGBoost, no pickle); the ridge arrays go to safetensors."""

    kind = "gbt"

    def __init__(
        self,
        feature_set: str = "all",
        n_rounds: int = 600,
        max_depth: int = 4,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        colsample: float = 0.5,
        min_child_weight: float = 5.0,
        n_threads: int = 1,
        linear_base: bool = True,
    ) -> None:
        self.feature_set = feature_set
        self.params = dict(
            n_rounds=int(n_rounds),
            max_depth=int(max_depth),
            learning_rate=float(learning_rate),
            subsample=float(subsample),
            colsample=float(colsample),
            min_child_weight=float(min_child_weight),
            n_threads=int(n_threads),
            linear_base=bool(linear_base),
        )
        self.base: RidgeModel | None = None
        self.booster = None

    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
        return encode(arrays, space, self.feature_set)

    def _margin(self, X: np.ndarray) -> np.ndarray:
        return self.base.predict(X) if self.base is not None else np.zeros(len(X))

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> GBTModel:
        import xgboost as xgb

        pilot = RidgeModel(self.feature_set, 1.0, robust=True).fit(X, y)
        slope = HUBER_C * robust_scale(y - pilot.predict(X))
        self.base = pilot if self.params["linear_base"] else None
        p = self.params
        params = {
            "objective": "reg:pseudohubererror",
            "huber_slope": slope,
            "base_score": 0.0 if self.base is not None else float(np.median(y)),
            "tree_method": "hist",
            "max_depth": p["max_depth"],
            "eta": p["learning_rate"],
            "subsample": p["subsample"],
            "colsample_bytree": p["colsample"],
            "min_child_weight": p["min_child_weight"],
            "nthread": p["n_threads"],
            "seed": int(seed),
        }
        data = xgb.DMatrix(X, label=y, base_margin=self._margin(X))
        self.booster = xgb.train(params, data, num_boost_round=p["n_rounds"])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self.booster.inplace_predict(X, base_margin=self._margin(X))
        return np.asarray(out, dtype=np.float64)

    def config(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, **self.params}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {"xgboost_model": json.loads(bytes(self.booster.save_raw(raw_format="json")))}
        arrays: dict[str, np.ndarray] = {}
        if self.base is not None:
            base_meta, base_arrays = self.base.state()
            meta["base"] = base_meta
            arrays = {f"base.{k}": v for k, v in base_arrays.items()}
        return meta, arrays

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> GBTModel:
        import xgboost as xgb

        self.booster = xgb.Booster(params={"nthread": self.params["n_threads"]})
        self.booster.load_model(bytearray(json.dumps(meta["xgboost_model"]).encode()))
        self.base = None
        if self.params["linear_base"]:
            base_arrays = {k[5:]: v for k, v in arrays.items() if k.startswith("base.")}
            self.base = RidgeModel(self.feature_set, 1.0, True).load_state(meta["base"], base_arrays)
        return self

    def describe(self) -> str:
        base = "ridge + " if self.params["linear_base"] else ""
        return f"gbt[{self.feature_set}, {base}{self.params['n_rounds']}x d{self.params['max_depth']}]"


# --- MLP -----------------------------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch ops on `n` intra-op threads, restoring the previous count afterwards: these
    nets are too small to gain from threads, and on a loaded machine 2 spinning threads made a
    training step 30-50x slower than 1 (measured here: ~2 ms vs 50-100 ms)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MLPModel(Model):
    """A ReLU MLP (OFA's accuracy predictor is 3 x 400) on standardised features, Huber loss,
    AdamW with a cosine schedule; weights go to safetensors. Seeded by an explicit generator."""

    kind = "mlp"

    def __init__(
        self,
        feature_set: str = "analytic",
        hidden: tuple[int, ...] | list[int] = (64, 64),
        epochs: int = 100,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        self.feature_set = feature_set
        self.hidden = tuple(int(h) for h in hidden)
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.learning_rate, self.weight_decay = float(learning_rate), float(weight_decay)
        self.scaler: Standardizer | None = None
        self.y_mean, self.y_std = 0.0, 1.0
        self.net = None

    def features(self, arrays: ArchArrays, space: MBV3Space) -> np.ndarray:
        return encode(arrays, space, self.feature_set)

    def _build(self, n_in: int):
        import torch

        layers: list[torch.nn.Module] = []
        for h in self.hidden:
            layers += [torch.nn.Linear(n_in, h), torch.nn.ReLU()]
            n_in = h
        layers.append(torch.nn.Linear(n_in, 1))
        return torch.nn.Sequential(*layers)

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> MLPModel:
        with torch_threads(1):
            return self._fit(X, y, seed)

    def _fit(self, X: np.ndarray, y: np.ndarray, seed: int) -> MLPModel:
        import torch

        self.scaler = Standardizer.fit(X)
        Z = self.scaler(X)
        coef, intercept = huber_ridge(Z, y, 1.0, robust=True)
        self.y_mean, self.y_std = float(np.median(y)), float(max(np.std(y), 1e-12))
        delta = HUBER_C * robust_scale(y - Z @ coef - intercept) / self.y_std
        g = torch.Generator().manual_seed(int(seed))
        self.net = self._build(X.shape[1])
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, torch.nn.Linear):
                    torch.nn.init.kaiming_uniform_(m.weight, nonlinearity="relu", generator=g)
                    torch.nn.init.zeros_(m.bias)
        xs = torch.as_tensor(Z, dtype=torch.float32)
        ys = torch.as_tensor((y - self.y_mean) / self.y_std, dtype=torch.float32)
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        steps_per_epoch = max(1, -(-len(xs) // self.batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * steps_per_epoch)
        loss_fn = torch.nn.HuberLoss(delta=float(delta))
        self.net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(xs), generator=g)
            for start in range(0, len(xs), self.batch_size):
                idx = order[start : start + self.batch_size]
                opt.zero_grad(set_to_none=True)
                loss_fn(self.net(xs[idx]).squeeze(1), ys[idx]).backward()
                opt.step()
                sched.step()
        self.net.eval()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch_threads(1), torch.inference_mode():
            out = self.net(torch.as_tensor(self.scaler(X), dtype=torch.float32)).squeeze(1)
        return out.double().numpy() * self.y_std + self.y_mean

    def config(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "hidden": list(self.hidden),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
        }

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {f"net.{k}": v.detach().numpy().copy() for k, v in self.net.state_dict().items()}
        arrays.update(x_mean=self.scaler.mean, x_std=self.scaler.std)
        return {"y_mean": self.y_mean, "y_std": self.y_std}, arrays

    def load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> MLPModel:
        import torch

        self.scaler = Standardizer(arrays["x_mean"], arrays["x_std"])
        self.y_mean, self.y_std = float(meta["y_mean"]), float(meta["y_std"])
        self.net = self._build(len(self.scaler.mean))
        weights = {k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("net.")}
        self.net.load_state_dict(weights)
        self.net.eval()
        return self

    def describe(self) -> str:
        return f"mlp[{self.feature_set}, {'x'.join(map(str, self.hidden))}]"


MODELS: dict[str, type[Model]] = {m.kind: m for m in (LUTModel, RidgeModel, GBTModel, MLPModel)}


def build_model(kind: str, config: Mapping[str, Any], lut: Mapping[str, float] | None = None) -> Model:
    """An unfitted model of `kind` from its `config()`."""
    if kind not in MODELS:
        raise ValueError(f"model = {kind!r} is not allowed; allowed: {', '.join(MODELS)}")
    if kind == "lut":
        if lut is None:
            raise ValueError("model = 'lut' needs a lookup table: pass lut=<lut.csv>")
        return LUTModel(lut, **config)
    return MODELS[kind](**config)
