"""What each image model accepts: sizes, number of images, prompt length and options.

Sources: ../shared/reference/azure-image-apis.md §2.2 (DALL-E 2), §3.2 (Azure deployments),
§4.2 (OpenAI). The same model can differ by API: Azure's gpt-image-1 has no WebP output.
Validation (app.validation) and the form's option fields are both driven by these tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    """One model option: a choice among values, or a whole number in a range."""

    name: str
    label: str
    default: str | int
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    help: str = ""

    @property
    def is_number(self) -> bool:
        return not self.choices


@dataclass(frozen=True)
class ImageModel:
    name: str
    sizes: tuple[str, ...]
    default_size: str
    max_images: int
    max_prompt_chars: int
    options: tuple[Option, ...] = field(default=())

    def option(self, name: str) -> Option | None:
        return next((option for option in self.options if option.name == name), None)

    @property
    def option_defaults(self) -> dict[str, str | int]:
        return {option.name: option.default for option in self.options}


DALL_E_2 = ImageModel(
    name="dall-e-2",
    sizes=("256x256", "512x512", "1024x1024"),
    default_size="1024x1024",
    # The docs conflict (1-5 vs 1-10); the TypeSpec and the how-to say 1-10.
    max_images=10,
    max_prompt_chars=1000,
)

DALL_E_3 = ImageModel(
    name="dall-e-3",
    sizes=("1024x1024", "1792x1024", "1024x1792"),
    default_size="1024x1024",
    max_images=1,
    max_prompt_chars=4000,
    options=(
        Option("quality", "Quality", "standard", ("standard", "hd")),
        Option("style", "Style", "vivid", ("vivid", "natural")),
    ),
)


def _gpt_image(name: str, output_formats: tuple[str, ...]) -> ImageModel:
    return ImageModel(
        name=name,
        sizes=("1024x1024", "1536x1024", "1024x1536", "auto"),
        default_size="1024x1024",
        max_images=10,
        max_prompt_chars=32000,
        options=(
            Option("quality", "Quality", "auto", ("auto", "low", "medium", "high")),
            Option("background", "Background", "auto", ("auto", "transparent", "opaque")),
            Option("output_format", "Format", "png", output_formats),
            Option(
                "output_compression",
                "Compression",
                100,
                minimum=0,
                maximum=100,
                help="JPEG/WebP quality, 0-100",
            ),
        ),
    )


GPT_IMAGE_NAMES = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
# Azure: "WEBP images aren't supported" (§3.2); OpenAI accepts webp (§4.2).
AZURE_MODELS = {
    model.name: model
    for model in (
        DALL_E_2,
        DALL_E_3,
        *(_gpt_image(name, ("png", "jpeg")) for name in GPT_IMAGE_NAMES),
    )
}
OPENAI_MODELS = {
    model.name: model
    for model in (
        DALL_E_2,
        DALL_E_3,
        *(_gpt_image(name, ("png", "jpeg", "webp")) for name in GPT_IMAGE_NAMES),
    )
}


def is_gpt_image(model: ImageModel) -> bool:
    return model.name in GPT_IMAGE_NAMES
