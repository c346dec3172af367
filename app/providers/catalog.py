"""Which providers are configured: one `Target` per Azure deployment, OpenAI model, or the
asynchronous DALL-E 2 API. A target is what a person picks in the form ("provider").

The first configured target is the default. Without Azure or OpenAI credentials every kind is
offered against the built-in emulator, so the demo shows all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.image_models import AZURE_MODELS, DALL_E_2, GPT_IMAGE_NAMES, OPENAI_MODELS, ImageModel

AZURE_ASYNC = "azure_async"
AZURE_DEPLOYMENT = "azure_deployment"
OPENAI = "openai"

# What the emulator offers when nothing is configured (its default deployments).
EMULATOR_DEPLOYMENTS = (("gpt-image-1", "gpt-image-1"), ("dall-e-3", "dall-e-3"))
EMULATOR_OPENAI_MODELS = ("gpt-image-1",)


class CatalogError(ValueError):
    """A provider setting is malformed; the message names the setting."""


@dataclass(frozen=True)
class Target:
    id: str
    label: str
    api: str
    model: ImageModel
    deployment: str | None = None
    emulated: bool = False

    @property
    def synchronous(self) -> bool:
        return self.api != AZURE_ASYNC


def parse_deployments(raw: str | None) -> list[tuple[str, str]]:
    """`name=model,name2=model2` (a name that is itself a model name may omit `=model`)."""
    deployments: list[tuple[str, str]] = []
    for entry in (raw or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, _, model = (part.strip() for part in entry.partition("="))
        model = model or (name if name in AZURE_MODELS else "")
        if not name or not model:
            raise CatalogError(
                f"AZURE_OPENAI_DEPLOYMENT entry {entry!r} needs its model, e.g. "
                f"{name or 'my-images'}=gpt-image-1."
            )
        if model not in AZURE_MODELS or model == DALL_E_2.name:
            raise CatalogError(
                f"AZURE_OPENAI_DEPLOYMENT entry {entry!r}: the model must be one of "
                f"{', '.join(name for name in AZURE_MODELS if name != DALL_E_2.name)}."
            )
        if any(existing == name for existing, _ in deployments):
            raise CatalogError(f"AZURE_OPENAI_DEPLOYMENT names {name!r} twice.")
        deployments.append((name, model))
    return deployments


def parse_openai_models(raw: str | None) -> list[str]:
    models = [name.strip() for name in (raw or "").split(",") if name.strip()]
    for name in models:
        if name not in OPENAI_MODELS:
            raise CatalogError(
                f"OPENAI_IMAGE_MODELS: unknown model {name!r}; use {', '.join(OPENAI_MODELS)}."
            )
    return models


def build_targets(settings: Mapping[str, Any]) -> list[Target]:
    """The configured targets, in the order the form offers them (first is the default)."""
    azure = bool(settings.get("AZURE_OPENAI_ENDPOINT"))
    openai = bool(settings.get("OPENAI_API_KEY"))
    if not azure and not openai:
        return emulator_targets()
    targets: list[Target] = []
    deployments = parse_deployments(settings.get("AZURE_OPENAI_DEPLOYMENT"))
    if azure:
        targets += [_deployment_target(name, model) for name, model in deployments]
    if openai:
        models = parse_openai_models(settings.get("OPENAI_IMAGE_MODELS")) or [GPT_IMAGE_NAMES[0]]
        targets += [_openai_target(model) for model in models]
    async_setting = (settings.get("AZURE_OPENAI_ASYNC_DALLE2") or "auto").lower()
    if async_setting not in ("auto", "on", "off"):
        raise CatalogError("AZURE_OPENAI_ASYNC_DALLE2 must be auto, on or off.")
    if azure and (async_setting == "on" or (async_setting == "auto" and not deployments)):
        targets.append(_async_target())
    return targets


def emulator_targets() -> list[Target]:
    return [
        *(_deployment_target(name, model, emulated=True) for name, model in EMULATOR_DEPLOYMENTS),
        *(_openai_target(model, emulated=True) for model in EMULATOR_OPENAI_MODELS),
        _async_target(emulated=True),
    ]


def _suffix(emulated: bool) -> str:
    return " (emulator)" if emulated else ""


def _deployment_target(name: str, model: str, emulated: bool = False) -> Target:
    return Target(
        id=f"{'emulator-' if emulated else ''}azure:{name}",
        label=f"{model} · Azure deployment {name}{_suffix(emulated)}",
        api=AZURE_DEPLOYMENT,
        model=AZURE_MODELS[model],
        deployment=name,
        emulated=emulated,
    )


def _openai_target(model: str, emulated: bool = False) -> Target:
    return Target(
        id=f"{'emulator-' if emulated else ''}openai:{model}",
        label=f"{model} · OpenAI{_suffix(emulated)}",
        api=OPENAI,
        model=OPENAI_MODELS[model],
        emulated=emulated,
    )


def _async_target(emulated: bool = False) -> Target:
    return Target(
        id=f"{'emulator-' if emulated else ''}azure-async",
        label=f"dall-e-2 · Azure asynchronous API (retired){_suffix(emulated)}",
        api=AZURE_ASYNC,
        model=DALL_E_2,
        emulated=emulated,
    )
