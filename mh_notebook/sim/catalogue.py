"""The simulator's model catalogue: providers, media types, latencies and failure rates.

Latencies are seconds at ``speed=1`` (log-normal around ``median``, clipped to
``[low, high]``); the simulator divides every duration by its ``speed``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "ALIASES",
    "API_ENDPOINTS",
    "CATALOGUE",
    "ERRORS",
    "SIM_ENDPOINTS",
    "ApiModel",
    "ModelSpec",
    "endpoint_of",
]


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


# ----------------------------------------------------------------- the documented API
Tier = tuple[float, float]
"""A price range ``(low, high)`` in USD: 480p/540p pay ``low``, 720p the middle, 1080p ``high``."""


@dataclass(frozen=True)
class ApiModel:
    """A model as ``POST /api/v1/{provider}/{capability}`` knows it: id, price, input bounds.

    ``spec`` is its simulated behaviour (latency, failures, media); ``spec.model`` and
    ``spec.provider`` are what its tasks report.
    """

    spec: ModelSpec
    price: Tier
    per_second: bool
    """True: ``price`` is per output second (``input.duration``); False: per image/video."""
    durations: tuple[int, ...] = ()
    """Allowed ``input.duration`` values (seconds); empty for images and audio."""
    off_peak: bool = False
    """``input.off_peak: true`` halves the price (Vidu)."""
    documented: bool = True
    """False for the simulator's own models (kept from earlier versions; not ModelHunter's)."""

    @property
    def model(self) -> str:
        """The model id, as the API names it."""
        return self.spec.model

    def cost(self, inputs: dict[str, object]) -> float:
        """The price of one task with these (validated) inputs, in USD."""
        low, high = self.price
        rate = {"480p": low, "540p": low, "1080p": high}.get(str(inputs.get("resolution")), (low + high) / 2)
        duration = inputs.get("duration", DEFAULT_DURATION if self.durations else 1)
        amount = rate * float(duration) if self.per_second else rate * (2 if duration == 10 else 1)  # type: ignore[arg-type]
        if self.off_peak and inputs.get("off_peak") is True:
            amount /= 2
        return round(amount, 4)


DEFAULT_DURATION = 5
"""Seconds of video when ``input.duration`` is not given."""


def _api(
    spec: str | ModelSpec,
    model: str,
    provider: str,
    price: Tier,
    per_second: bool,
    durations: tuple[int, ...] = (),
    **kw: object,
) -> ApiModel:
    base = CATALOGUE[spec] if isinstance(spec, str) else spec
    return ApiModel(replace(base, model=model, provider=provider), price, per_second, durations, **kw)  # type: ignore[arg-type]


_VIDU = tuple(range(1, 17))
_KLING3 = tuple(range(3, 16))
_SEEDANCE = tuple(range(2, 13))
_SEEDANCE_2_S = tuple(range(4, 16))
_SEEDANCE_2 = ModelSpec("bytedance/seedance-2", "seedance", "video", "mp4", 300, 150, 600, 0.05)
_LITE = ((0.01, 0.045), True, _SEEDANCE)
_SEEDANCE_2_MODEL = _api(_SEEDANCE_2, _SEEDANCE_2.model, "seedance", (0.095, 0.51), True, _SEEDANCE_2_S)
_SEEDANCE_MODELS = (
    _api("seedance-1.5-pro", "seedance-1-5-pro", "seedance", (0.03, 0.122), True, tuple(range(4, 13))),
    _api("seedance-1.0-pro", "seedance-1-0-pro", "seedance", (0.025, 0.1), True, _SEEDANCE),
    _api("seedance-1.0-lite", "seedance-1-0-pro-fast", "seedance", (0.012, 0.05), True, _SEEDANCE),
)
_SEEDREAM_T2I = (
    _api("seedream-5.0-lite", "seedream-5-0-lite", "seedream", (0.04, 0.04), False),
    _api("seedream-4.5", "seedream-4-5", "seedream", (0.04, 0.04), False),
    _api("seedream-4.0", "seedream-4-0", "seedream", (0.03, 0.03), False),
    _api("seedream-3.0", "seedream-3-0-t2i", "seedream", (0.03, 0.03), False),
)
_SEEDREAM_I2I = (
    *_SEEDREAM_T2I[1:3],
    _api("seedream-3.0", "seededit-3-0-i2i", "seedream", (0.02, 0.02), False),
)
_VIDU_MODELS = (
    _api("viduq3-pro", "viduq3-pro", "vidu", (0.07, 0.16), True, _VIDU, off_peak=True),
    _api("viduq3-turbo", "viduq3-turbo", "vidu", (0.04, 0.08), True, _VIDU, off_peak=True),
)
_KLING_MODELS = (
    _api("kling-v3.0", "kling-v3", "kling", (0.084, 0.168), True, _KLING3),
    _api("kling-v2.6", "kling-v2-6", "kling", (0.21, 1.40), False, (5, 10)),
)


def _endpoint(*models: ApiModel) -> dict[str, ApiModel]:
    return {m.model: m for m in models}


API_ENDPOINTS: dict[str, dict[str, ApiModel]] = {
    "vidu/text-to-video": _endpoint(*_VIDU_MODELS),
    "vidu/image-to-video": _endpoint(*_VIDU_MODELS),
    "kling/text-to-video": _endpoint(*_KLING_MODELS),
    "kling/image-to-video": _endpoint(*_KLING_MODELS),
    "seedance/text-to-video": _endpoint(
        *_SEEDANCE_MODELS, _api("seedance-1.0-lite", "seedance-1-0-lite-t2v", "seedance", *_LITE)
    ),
    "seedance/image-to-video": _endpoint(
        *_SEEDANCE_MODELS, _api("seedance-1.0-lite", "seedance-1-0-lite-i2v", "seedance", *_LITE)
    ),
    "seedance/multimodal-video": _endpoint(_SEEDANCE_2_MODEL),
    "seedream/text-to-image": _endpoint(*_SEEDREAM_T2I),
    "seedream/image-to-image": _endpoint(*_SEEDREAM_I2I),
    "gemini/image-to-image": _endpoint(_api("nano-banana-2", "nano-banana-2", "gemini", (0.08, 0.16), False)),
}
"""The documented creation endpoints (``provider/capability``) and their models and prices."""

_CAPABILITY = {"video": "text-to-video", "image": "text-to-image", "audio": "text-to-speech"}
_OLD_PRICES: dict[str, tuple[Tier, bool]] = {
    "veo-3.1": ((0.2, 0.4), True),
    "veo-3.1-fast": ((0.1, 0.15), True),
    "grok-imagine-video": ((0.05, 0.05), True),
    "wan-2.6": ((0.05, 0.1), True),
    "eleven-v3": ((0.01, 0.01), False),
}


def _old_model(spec: ModelSpec) -> ApiModel:
    alias = ALIASES.get(spec.model)
    twin = next((m for ep in API_ENDPOINTS.values() for m in ep.values() if m.model == alias), None)
    price, per_second = (twin.price, twin.per_second) if twin else _OLD_PRICES[spec.model]
    durations = (twin.durations if twin else _VIDU) if spec.type == "video" else ()
    off_peak = bool(twin and twin.off_peak)
    return ApiModel(spec, price, per_second, durations, off_peak=off_peak, documented=False)


ALIASES: dict[str, str] = {
    "seedance-1.0-lite": "seedance-1-0-lite-t2v",
    "seedance-1.0-pro": "seedance-1-0-pro",
    "seedance-1.5-pro": "seedance-1-5-pro",
    "kling-v2.6": "kling-v2-6",
    "kling-v3.0": "kling-v3",
    "seedream-5.0-lite": "seedream-5-0-lite",
    "seedream-4.5": "seedream-4-5",
    "seedream-4.0": "seedream-4-0",
    "seedream-3.0": "seedream-3-0-t2i",
    "viduq3-turbo": "viduq3-turbo",
    "viduq3-pro": "viduq3-pro",
    "nano-banana-2": "nano-banana-2",
}
"""The simulator's earlier model ids and the documented id each stands for."""

SIM_ENDPOINTS: dict[str, dict[str, ApiModel]] = {}
"""Every creation endpoint the simulator serves: the documented ones, then the earlier
simulator models under their own provider (``bytedance/text-to-image`` for
``seedream-4.5``...), which report their old ids and providers as before."""
for _path, _models in API_ENDPOINTS.items():
    SIM_ENDPOINTS[_path] = dict(_models)
for _spec in CATALOGUE.values():
    SIM_ENDPOINTS.setdefault(f"{_spec.provider}/{_CAPABILITY[_spec.type]}", {}).setdefault(
        _spec.model, _old_model(_spec)
    )


def endpoint_of(model: str) -> str:
    """The creation endpoint ``sim.submit(model=...)`` uses: an earlier id's own, else the
    first documented endpoint that has the model. Raises ``KeyError`` if none has it."""
    if model in CATALOGUE:
        spec = CATALOGUE[model]
        return f"{spec.provider}/{_CAPABILITY[spec.type]}"
    return next(path for path, models in SIM_ENDPOINTS.items() if model in models)
