"""The simulator's model catalogue: providers, media types, latencies and failure rates.

Latencies are seconds at ``speed=1`` (log-normal around ``median``, clipped to
``[low, high]``); the simulator divides every duration by its ``speed``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOGUE", "ERRORS", "ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """One simulated model: who serves it, what it makes, how long it takes."""

    model: str
    provider: str
    type: str
    format: str
    median: float
    low: float
    high: float
    fail_rate: float
    sigma: float = 0.3


def _specs(*rows: tuple[str, str, str, str, float, float, float, float]) -> dict[str, ModelSpec]:
    return {r[0]: ModelSpec(*r) for r in rows}


CATALOGUE: dict[str, ModelSpec] = _specs(
    # model                 provider     type     fmt    median low  high  fail
    ("viduq3-turbo",        "vidu",      "video", "mp4", 35,   20,  70,   0.04),
    ("viduq3-pro",          "vidu",      "video", "mp4", 70,   40,  140,  0.04),
    ("seedance-1.0-lite",   "bytedance", "video", "mp4", 40,   25,  90,   0.05),
    ("seedance-1.0-pro",    "bytedance", "video", "mp4", 65,   35,  130,  0.05),
    ("seedance-1.5-pro",    "bytedance", "video", "mp4", 80,   45,  160,  0.05),
    ("kling-v2.6",          "kling",     "video", "mp4", 90,   50,  170,  0.06),
    ("kling-v3.0",          "kling",     "video", "mp4", 110,  60,  180,  0.06),
    ("veo-3.1",             "google",    "video", "mp4", 120,  70,  180,  0.05),
    ("veo-3.1-fast",        "google",    "video", "mp4", 50,   25,  100,  0.05),
    ("grok-imagine-video",  "xai",       "video", "mp4", 45,   20,  100,  0.08),
    ("wan-2.6",             "alibaba",   "video", "mp4", 75,   40,  150,  0.06),
    ("seedream-5.0-lite",   "bytedance", "image", "png", 5,    3,   12,   0.03),
    ("seedream-4.5",        "bytedance", "image", "jpg", 8,    4,   16,   0.03),
    ("seedream-4.0",        "bytedance", "image", "jpg", 7,    3,   15,   0.03),
    ("seedream-3.0",        "bytedance", "image", "jpg", 6,    3,   14,   0.03),
    ("nano-banana-2",       "google",    "image", "png", 6,    3,   14,   0.04),
    ("eleven-v3",           "elevenlabs", "audio", "mp3", 4,   2,   10,   0.02),
)  # fmt: skip

ERRORS: tuple[tuple[str, str], ...] = (
    ("PROVIDER_ERROR", "Content moderation: prompt contains restricted content"),
    ("PROVIDER_ERROR", "Provider returned an internal error, please retry"),
    ("PROVIDER_TIMEOUT", "The provider did not finish the generation in time"),
    ("INSUFFICIENT_CREDITS", "Not enough credits to complete the generation"),
)
"""Failure reasons drawn for failed tasks: ``(code, message)``."""
