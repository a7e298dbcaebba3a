"""Intensity normalisation of crops: per-channel percentiles, fixed values, or none."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

POLICIES = ("percentile", "fixed", "none")
# the coarsest level is read whole for percentiles; above this many pixels it is subsampled by striding
MAX_STAT_PIXELS = 4_000_000


@dataclass
class Normalizer:
    """Maps raw intensities to ``(img - low) / (high - low)`` per channel (float32).

    policy: ``"percentile"`` (low/high computed once from the pyramid's coarsest level),
        ``"fixed"`` (low/high given, e.g. from a model's ``muvit.yaml``), ``"none"`` (cast only).
    low, high: one value per channel (a single value applies to every channel).
    """

    policy: str = "none"
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    percentiles: tuple[float, float] = (1.0, 99.8)

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"normalisation policy {self.policy!r} is unknown; use one of {', '.join(POLICIES)}.")
        self.low = [float(v) for v in np.atleast_1d(self.low)]
        self.high = [float(v) for v in np.atleast_1d(self.high)]
        if self.policy != "none":
            if not self.low or len(self.low) != len(self.high):
                raise ValueError(f"normalisation needs as many low as high values, got low={self.low} high={self.high}.")
            if not np.all(np.isfinite(self.low + self.high)):
                raise ValueError(f"normalisation values must be finite numbers, got low={self.low} high={self.high}.")
        self.percentiles = (float(self.percentiles[0]), float(self.percentiles[1]))

    @classmethod
    def from_pyramid(cls, pyramid, percentiles=(1.0, 99.8)) -> Normalizer:
        """Per-channel percentiles of the coarsest level (never a full-resolution read)."""
        arr = pyramid.arrays[-1]
        n = int(np.prod(arr.shape[1:]))
        step = int(np.ceil((n / MAX_STAT_PIXELS) ** (1 / (arr.ndim - 1)))) if n > MAX_STAT_PIXELS else 1
        # local threads even when a dask.distributed client is active: the slide is open in this process (the
        # scheduler function, not its name: naming it imports dask.distributed to look for a client, ~0.25 s)
        from dask.threaded import get as threaded_get

        sample = arr[(slice(None),) + (slice(None, None, step),) * (arr.ndim - 1)]
        data = np.asarray(sample.compute(scheduler=threaded_get), dtype=np.float64)
        data = data.reshape(data.shape[0], -1)
        if np.isnan(data).any():
            raise ValueError("the image contains NaN values; replace them (e.g. with 0) before normalising.")
        low = np.percentile(data, percentiles[0], axis=1)
        high = np.percentile(data, percentiles[1], axis=1)
        high = np.where(high > low, high, low + 1.0)  # a flat channel must not divide by zero
        return cls("percentile", low.tolist(), high.tolist(), tuple(percentiles))

    @classmethod
    def fixed(cls, low, high) -> Normalizer:
        return cls("fixed", low, high)

    def to_dict(self) -> dict:
        return {"policy": self.policy, "low": list(self.low), "high": list(self.high),
                "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalizer:
        d = dict(d or {})
        return cls(d.get("policy", "none"), d.get("low", []), d.get("high", []),
                   tuple(d.get("percentiles", (1.0, 99.8))))

    def __call__(self, img, spatial_ndim: int = 2) -> np.ndarray:
        """Normalise ``img (..., C, H, W)`` (or ``(..., C, Z, Y, X)`` with ``spatial_ndim=3``) to float32."""
        out = np.asarray(img, dtype=np.float32)
        if self.policy == "none":
            return out.copy() if out is img else out
        low, span = self.channel_bounds(out.shape, spatial_ndim)
        return (out - low) / span

    def channel_bounds(self, shape, spatial_ndim: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``low`` and ``high - low`` per channel, shaped to broadcast over ``(..., C, *spatial)``."""
        spatial = int(spatial_ndim)
        n_c = shape[-spatial - 1]
        low = np.asarray(self.low, dtype=np.float32)
        high = np.asarray(self.high, dtype=np.float32)
        if low.size == 1:
            low, high = np.full(n_c, low[0], np.float32), np.full(n_c, high[0], np.float32)
        if low.size != n_c:
            raise ValueError(f"normalisation has {low.size} channel values but the image has {n_c} channels.")
        bshape = (n_c,) + (1,) * spatial
        return low.reshape(bshape), (high - low).reshape(bshape)

    def apply_(self, img: np.ndarray, spatial_ndim: int = 2) -> np.ndarray:
        """`__call__` in place when ``img`` is a float32 array owning its data (no temporaries; the same values,
        as the same two float32 operations run), else a new array. Returns the normalised array."""
        if not (isinstance(img, np.ndarray) and img.dtype == np.float32 and img.flags.owndata
                and img.flags.writeable) or self.policy == "none":
            return self(img, spatial_ndim)
        low, span = self.channel_bounds(img.shape, spatial_ndim)
        np.subtract(img, low, out=img)
        np.divide(img, span, out=img)
        return img
