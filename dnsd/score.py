"""The score the picker weighs: capacity x health x admin weight.

It lives on the ground floor because the plan builder needs it; the probes only feed its inputs
(uptime, response time, sync age) into `mirror_health`. The formula is shown to admins in
`mirrorctl show` and on the mirror page, so every factor is returned with the total.

    capacity  = bandwidth x hardware x features
      bandwidth = sqrt(bandwidth_mbit / 1000), clamped to [0.25, 4]   (unknown: 100 Mbit/s)
      hardware  = ((cores / 4) * (memory_gb / 8)) ** 0.25, clamped to [0.5, 2]  (unknown: 4, 8)
      features  = 1 + 0.1 if HTTPS + 0.1 if IPv6
    health    = uptime x speed x freshness
      uptime    = uptime_7d ** 2                 (unknown: 1; 90% up weighs 0.81)
      speed     = 1 / (1 + rtt_p95_ms / 1000)    (unknown: 1; 1 s p95 halves the weight)
      freshness = 1 below max_age / 4, falling linearly to 0.5 at max_age
    score     = capacity x health x weight       (weight: the admin's, default 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreInputs:
    bandwidth_mbit: int | None = None
    cores: int | None = None
    memory_gb: int | None = None
    has_https: bool = False
    has_ipv6: bool = False
    uptime_7d: float | None = None       # 0..1
    rtt_p95_ms: float | None = None
    sync_age: float | None = None        # seconds
    weight: float = 1.0


@dataclass(frozen=True)
class Score:
    bandwidth: float
    hardware: float
    features: float
    uptime: float
    speed: float
    freshness: float
    weight: float

    @property
    def capacity(self) -> float:
        return self.bandwidth * self.hardware * self.features

    @property
    def health(self) -> float:
        return self.uptime * self.speed * self.freshness

    @property
    def total(self) -> float:
        return self.capacity * self.health * self.weight

    def explain(self) -> str:
        return (
            f"score {self.total:.3f} = capacity {self.capacity:.3f} "
            f"(bandwidth {self.bandwidth:.2f} x hardware {self.hardware:.2f} x features "
            f"{self.features:.2f}) x health {self.health:.3f} (uptime {self.uptime:.2f} x speed "
            f"{self.speed:.2f} x freshness {self.freshness:.2f}) x weight {self.weight:g}"
        )


def inputs(mirror, health, sync_age: float | None) -> ScoreInputs:
    """The score's inputs from a mirror record and its health record (dnsd.records): the one place
    that says which column feeds which factor, so every score shown is the one the plan weighs."""
    return ScoreInputs(
        bandwidth_mbit=mirror.bandwidth_mbit, cores=mirror.cores, memory_gb=mirror.memory_gb,
        has_https=bool(mirror.has_https), has_ipv6=bool(mirror.has_ipv6),
        uptime_7d=health.uptime_7d, rtt_p95_ms=health.rtt_p95_ms, sync_age=sync_age,
        weight=float(mirror.weight if mirror.weight is not None else 1.0))


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def compute(i: ScoreInputs, max_age: float = 86400) -> Score:
    bw = _clamp(math.sqrt((i.bandwidth_mbit or 100) / 1000), 0.25, 4.0)
    hw = _clamp(((i.cores or 4) / 4 * (i.memory_gb or 8) / 8) ** 0.25, 0.5, 2.0)
    feat = 1.0 + (0.1 if i.has_https else 0.0) + (0.1 if i.has_ipv6 else 0.0)
    up = 1.0 if i.uptime_7d is None else _clamp(i.uptime_7d, 0.0, 1.0) ** 2
    speed = 1.0 if i.rtt_p95_ms is None else 1.0 / (1.0 + max(0.0, i.rtt_p95_ms) / 1000)
    fresh = 1.0
    if i.sync_age is not None and max_age > 0:
        quarter = max_age / 4
        if i.sync_age > quarter:
            fresh = _clamp(1.0 - 0.5 * (i.sync_age - quarter) / (max_age - quarter), 0.5, 1.0)
    return Score(bw, hw, feat, up, speed, fresh, max(0.0, i.weight))
