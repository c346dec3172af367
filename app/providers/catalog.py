"""Which providers are configured: one `Target` per Azure deployment, OpenAI model, or the
asynchronous DALL-E 2 API. A target is what a person picks in the form ("provider").

The first configured target is the default. Without Azure or OpenAI credentials every kind is
offered against the built-in emulator, so the demo shows all of them. Models come from the
catalogue in app.image_models; `Catalog.notices` are the one-line start-up notices about them
(a family told from a name, a retired model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.image_models import (
    AZURE,
    CURRENT_MODEL,
    OPENAI,
    ImageModel,
    UnknownModel,
    resolve_model,
)

AZURE_ASYNC = "azure_async"
AZURE_DEPLOYMENT = "azure_deployment"
AZURE_V1 = "azure_v1"
OPENAI_API = OPENAI

# An endpoint whose path ends like this is Azure's v1 API (azure-image-apis.md §3.6, §9):
# `POST {endpoint}images/generations` with the deployment name in `model`.
V1_SUFFIX = "/openai/v1/"

# What the emulator offers when nothing is configured (its default deployments): gpt-image-2 on
# the v1 route, gpt-image-1 and the retired dall-e-3 on the classic deployment route.
EMULATOR_V1_DEPLOYMENTS = (("gpt-image-2", "gpt-image-2"),)
EMULATOR_DEPLOYMENTS = (("gpt-image-1", "gpt-image-1"), ("dall-e-3", "dall-e-3"))
EMULATOR_OPENAI_MODELS = ("gpt-image-2", "gpt-image-1")

DEPLOYMENT_EXAMPLE = "studio=gpt-image-2"


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

    @property
    def retired(self) -> bool:
        return self.model.retired is not None


@dataclass
class Catalog:
    targets: list[Target]
    notices: list[str] = field(default_factory=list)


def is_v1_endpoint(endpoint: str | None) -> bool:
    return bool(endpoint) and endpoint.endswith(V1_SUFFIX)


def _model(entry: str, setting: str, raw_model: str, api: str, notices: list[str]) -> ImageModel:
    """`model` or `model:family`, resolved; a family told from the name is noticed once."""
    name, _, family = (part.strip() for part in raw_model.partition(":"))
    try:
        model = resolve_model(name, api, family or None)
    except UnknownModel as error:
        raise CatalogError(f"{setting} entry {entry!r}: {error}") from None
    if not model.listed:
        how = "as given" if family else "told from its name"
        notices.append(
            f"{setting}: {name} is not in Atelier's model catalogue; using the {model.family} "
            f"family's rules ({how})."
        )
    return model


def parse_deployments(raw: str | None, notices: list[str]) -> list[tuple[str, ImageModel]]:
    """`name=model[:family],...` (a name that is itself a model name may omit `=model`)."""
    deployments: list[tuple[str, ImageModel]] = []
    for entry in (raw or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, _, model_name = (part.strip() for part in entry.partition("="))
        if not name or not (model_name or _name_is_a_model(name)):
            raise CatalogError(
                f"AZURE_OPENAI_DEPLOYMENT entry {entry!r} needs its model, e.g. "
                f"{name or 'studio'}=gpt-image-2."
            )
        model = _model(entry, "AZURE_OPENAI_DEPLOYMENT", model_name or name, AZURE, notices)
        if model.family == "dall-e-2":
            raise CatalogError(
                f"AZURE_OPENAI_DEPLOYMENT entry {entry!r}: dall-e-2 deployments are retired; "
                "use the asynchronous API (AZURE_OPENAI_ASYNC_DALLE2=on) or a gpt-image-2 "
                "deployment."
            )
        if any(existing == name for existing, _ in deployments):
            raise CatalogError(f"AZURE_OPENAI_DEPLOYMENT names {name!r} twice.")
        deployments.append((name, model))
    return deployments


def _name_is_a_model(name: str) -> bool:
    try:
        return resolve_model(name, AZURE).listed
    except UnknownModel:
        return False


def parse_openai_models(raw: str | None, notices: list[str]) -> list[ImageModel]:
    models: list[ImageModel] = []
    for entry in (part.strip() for part in (raw or "").split(",")):
        if entry:
            models.append(_model(entry, "OPENAI_IMAGE_MODELS", entry, OPENAI, notices))
    return models


def build_catalog(settings: Mapping[str, Any]) -> Catalog:
    """The configured targets, in the order the form offers them (first is the default)."""
    endpoint = settings.get("AZURE_OPENAI_ENDPOINT")
    openai = bool(settings.get("OPENAI_API_KEY"))
    if not endpoint and not openai:
        return Catalog(emulator_targets())
    notices: list[str] = []
    async_setting = (settings.get("AZURE_OPENAI_ASYNC_DALLE2") or "auto").lower()
    if async_setting not in ("auto", "on", "off"):
        raise CatalogError("AZURE_OPENAI_ASYNC_DALLE2 must be auto, on or off.")
    deployments = parse_deployments(settings.get("AZURE_OPENAI_DEPLOYMENT"), notices)
    if endpoint and not deployments and async_setting != "on":
        raise CatalogError(
            "AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_DEPLOYMENT is not. Deploy an image "
            f"model on the resource (for example {CURRENT_MODEL}, in Azure AI Foundry → "
            "Deployments) and name the deployment and its model, e.g. "
            f"AZURE_OPENAI_DEPLOYMENT={DEPLOYMENT_EXAMPLE}. The retired asynchronous DALL-E 2 "
            "API is used only with AZURE_OPENAI_ASYNC_DALLE2=on."
        )
    targets: list[Target] = []
    if endpoint:
        api = AZURE_V1 if is_v1_endpoint(endpoint) else AZURE_DEPLOYMENT
        targets += [_deployment_target(name, model, api) for name, model in deployments]
    if openai:
        models = parse_openai_models(settings.get("OPENAI_IMAGE_MODELS"), notices)
        targets += [_openai_target(model) for model in models or [_openai(CURRENT_MODEL)]]
    if endpoint and async_setting == "on":
        if is_v1_endpoint(endpoint):
            raise CatalogError(
                "AZURE_OPENAI_ASYNC_DALLE2=on needs the resource's classic endpoint "
                "(https://RESOURCE.openai.azure.com/), not the /openai/v1/ one."
            )
        targets.append(_async_target())
    for target in targets:
        retired = target.model.retired
        if retired is not None:
            service = "Azure" if target.api != OPENAI_API else "OpenAI"
            notices.append(f"{target.id}: {retired.sentence(target.model.name, service)}")
    return Catalog(targets, notices)


def build_targets(settings: Mapping[str, Any]) -> list[Target]:
    return build_catalog(settings).targets


def emulator_targets() -> list[Target]:
    return [
        *(
            _deployment_target(name, _azure(model), AZURE_V1, emulated=True)
            for name, model in EMULATOR_V1_DEPLOYMENTS
        ),
        *(
            _deployment_target(name, _azure(model), AZURE_DEPLOYMENT, emulated=True)
            for name, model in EMULATOR_DEPLOYMENTS
        ),
        *(_openai_target(_openai(model), emulated=True) for model in EMULATOR_OPENAI_MODELS),
        _async_target(emulated=True),
    ]


def replacement_for(targets: list[Target], target: Target | None) -> Target:
    """The target to offer instead of `target` (gone or retired): the first one not retired."""
    if target is not None and not target.retired:
        return target
    return next((t for t in targets if not t.retired), targets[0])


def _azure(name: str) -> ImageModel:
    return resolve_model(name, AZURE)


def _openai(name: str) -> ImageModel:
    return resolve_model(name, OPENAI)


def _target(
    key: str, route: str, api: str, model: ImageModel, emulated: bool, deployment: str | None = None
) -> Target:
    """A target whose id ends in `key`, labelled with its model and `route` (where it is
    served), and with "(retired)" and "(emulator)" where they hold."""
    return Target(
        id=f"{'emulator-' if emulated else ''}{key}",
        label=f"{model.name} · {route}"
        + (" (retired)" if model.retired else "")
        + (" (emulator)" if emulated else ""),
        api=api,
        model=model,
        deployment=deployment,
        emulated=emulated,
    )


def _deployment_target(name: str, model: ImageModel, api: str, emulated: bool = False) -> Target:
    route = "Azure v1 deployment" if api == AZURE_V1 else "Azure deployment"
    return _target(f"azure:{name}", f"{route} {name}", api, model, emulated, deployment=name)


def _openai_target(model: ImageModel, emulated: bool = False) -> Target:
    return _target(f"openai:{model.name}", "OpenAI", OPENAI_API, model, emulated)


def _async_target(emulated: bool = False) -> Target:
    model = _azure("dall-e-2")
    return _target("azure-async", "Azure asynchronous API", AZURE_ASYNC, model, emulated)
