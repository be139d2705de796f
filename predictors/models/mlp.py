"""A small ReLU MLP (OFA's accuracy predictor is one), trained with torch on one thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ofa.space import MBV3Space
from ofa.threads import torch_threads
from predictors.features import ArchArrays, encode
from predictors.models.base import HUBER_C, Model, Standardizer, huber_ridge, robust_scale


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
        # one thread: these nets are too small to gain from more, and on a loaded machine 2 spinning
        # threads made a training step 30-50x slower than 1 (measured here: ~2 ms vs 50-100 ms)
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
