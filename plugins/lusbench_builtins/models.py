"""Built-in segmentation models from segmentation-models-pytorch: ``unet``, ``unetplusplus`` and ``fpn``.

Spec: ``ARCH[:ENCODER][,depth=D][,decoder=C1-C2-...][,weights=/path/encoder.pth]`` (docs/models.md).
Defaults are sized for a CPU: ResNet-18 encoder cut to depth 4 with a slim decoder. Encoders start from
random weights (nothing is downloaded) unless ``weights=`` names a local encoder state dict.
No torch or smp import at module level: registration must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lusbench
from lusbench.api.hookspecs import Register
from lusbench.train.models import ModelBuilder

if TYPE_CHECKING:
    import torch

DEFAULT_ENCODER = "resnet18"
DEFAULT_DEPTH = 4
EXAMPLE_ENCODERS = "resnet18, resnet34, mobilenet_v2, efficientnet-b0, mit_b0, or tu-<any timm model>"


@dataclass(frozen=True)
class Arch:
    """How one smp architecture is configured from a spec."""

    smp_class: str
    min_depth: int
    decoder_kw: tuple[str, ...]  # smp keyword(s) that ``decoder=a-b-...`` fills
    per_stage: bool  # True: one decoder width per encoder stage (U-Net family); False: fixed count

    def default_decoder(self, depth: int) -> tuple[int, ...]:
        # Slim decoders: on a CPU most of a U-Net's time is its full-resolution decoder blocks.
        return (64, 32, 16, 8, 8)[:depth] if self.per_stage else (64, 32)

    def decoder_kwargs(self, decoder: tuple[int, ...], depth: int) -> dict[str, Any]:
        if self.per_stage:
            return {self.decoder_kw[0]: list(decoder)}
        # smp's FPN head upsamples by a fixed 4, right only for depth 5: its finest pyramid level sits at
        # stride 2 ** (depth - 3), so the head must upsample by that to return full-size logits.
        return {**dict(zip(self.decoder_kw, decoder, strict=True)), "upsampling": 2 ** (depth - 3)}


ARCHS: dict[str, Arch] = {
    "unet": Arch("Unet", 1, ("decoder_channels",), per_stage=True),
    "unetplusplus": Arch("UnetPlusPlus", 1, ("decoder_channels",), per_stage=True),
    "fpn": Arch("FPN", 3, ("decoder_pyramid_channels", "decoder_segmentation_channels"), per_stage=False),
}


class SmpModel(ModelBuilder):
    """A configured smp architecture; :meth:`build` makes a fresh, randomly initialised network."""

    def __init__(self, arch: str, encoder: str, depth: int, decoder: tuple[int, ...], weights: Path | None) -> None:
        # ``weights`` stays a Path: the results store keys a trained fold by the bytes of every file a model names
        # by a Path attribute (lusbench.results.keys.input_files), so a file rewritten at the same path retrains.
        self.arch, self.encoder, self.depth, self.decoder, self.weights = arch, encoder, depth, decoder, weights
        parts = [encoder]
        if depth != DEFAULT_DEPTH:
            parts.append(f"depth={depth}")
        if decoder != ARCHS[arch].default_decoder(depth):
            parts.append("decoder=" + "-".join(map(str, decoder)))
        if weights is not None:
            parts.append(f"weights={weights}")
        self.name = f"{arch}:{','.join(parts)}"
        # Read the file and try it on the encoder once, up front: a bad file fails when the spec is parsed, not mid-run.
        self._state = None if weights is None else _read_state_dict(weights)
        if self._state is not None:
            self.build(1, 1)

    def build(self, in_channels: int, classes: int) -> torch.nn.Module:
        import segmentation_models_pytorch as smp

        spec = ARCHS[self.arch]
        model = getattr(smp, spec.smp_class)(
            encoder_name=self.encoder,
            encoder_weights=None,
            encoder_depth=self.depth,
            in_channels=in_channels,
            classes=classes,
            activation=None,
            **spec.decoder_kwargs(self.decoder, self.depth),
        )
        dropped = _drop_unused_stages(model.encoder, self.depth)
        if self._state is not None:
            kept = {k: v for k, v in self._state.items() if k.split(".", 1)[0] not in dropped}
            _load_encoder(model.encoder, kept, self.weights)
        return model


def _drop_unused_stages(encoder: torch.nn.Module, depth: int) -> set[str]:
    """Remove the ResNet stages a shallower encoder never runs, and return their names: smp keeps them,
    and at the default depth 4 ResNet-18's last stage is 8.4M of 11.5M parameters that would be
    stored, copied for model selection and checkpointed for nothing."""
    from segmentation_models_pytorch.encoders.resnet import ResNetEncoder

    if not isinstance(encoder, ResNetEncoder):
        return set()
    dropped = {f"layer{stage}" for stage in range(depth, 5)}  # forward runs layer1..layer{depth-1}
    for name in dropped:
        delattr(encoder, name)
    return dropped


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not path.is_file():
        raise ValueError(f"weights file '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (pickle, zip, runtime) for an unreadable file
        raise ValueError(f"cannot read weights file '{path}': {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file '{path}' is not a state dict (name -> tensor)")
    return state


def _load_encoder(encoder: torch.nn.Module, state: dict[str, torch.Tensor], path: Path | None) -> None:
    """Load an encoder state dict; a 3-channel (RGB) first convolution is summed to the model's 1 channel,
    as smp does for its own pretrained weights. Classifier keys (``fc.*``) of torchvision checkpoints are
    dropped by smp's ResNet encoders."""
    own = encoder.state_dict()
    adapted = dict(state)
    for key, value in state.items():
        mine = own.get(key)
        if mine is not None and value.ndim == 4 and mine.shape[1] == 1 and value.shape[1] != 1 \
                and value.shape[:1] + value.shape[2:] == mine.shape[:1] + mine.shape[2:]:
            adapted[key] = value.sum(1, keepdim=True)
    try:
        encoder.load_state_dict(adapted)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:240]
        raise ValueError(f"weights file '{path}' does not fit encoder {type(encoder).__name__}: {first}") from None


def _encoder_name(text: str) -> str:
    import segmentation_models_pytorch as smp

    if text.startswith("tu-"):
        import timm

        if timm.is_model(text[3:]):
            return text
    elif text in smp.encoders.get_encoder_names():
        return text
    raise ValueError(f"unknown encoder '{text}' (e.g. {EXAMPLE_ENCODERS})")


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"{what} must be positive integers joined by '-', got '{text}'") from None
    if any(v < 1 for v in values):
        raise ValueError(f"{what} must be positive integers joined by '-', got '{text}'")
    return values


def _make(arch: str, encoder: str | None, extra: tuple[str, ...], depth: str | None, decoder: str | None,
          weights: str | None, unknown: dict[str, str]) -> SmpModel:
    spec = ARCHS[arch]
    if extra or unknown:
        given = ", ".join([*extra, *(f"{k}=..." for k in unknown)])
        raise ValueError(f"{arch} got unexpected argument(s) {given}; usage: {arch}:ENCODER,depth=D,decoder=C1-C2,weights=PATH")
    name = _encoder_name(encoder or DEFAULT_ENCODER)
    try:
        d = DEFAULT_DEPTH if depth is None else int(depth)
    except ValueError:
        raise ValueError(f"depth must be an integer, got '{depth}'") from None
    if not spec.min_depth <= d <= 5:
        raise ValueError(f"{arch} depth must be in {spec.min_depth}..5, got {d}")
    widths = spec.default_decoder(d) if decoder is None else _int_list(decoder, "decoder")
    wanted = d if spec.per_stage else len(spec.decoder_kw)
    if len(widths) != wanted:
        raise ValueError(f"{arch} decoder needs {wanted} widths (one per {'stage' if spec.per_stage else 'kind'}), got {decoder}")
    path = None if weights is None else Path(weights).expanduser().resolve()
    return SmpModel(arch, name, d, widths, path)


def unet(encoder: str | None = None, *extra: str, depth: str | None = None, decoder: str | None = None,
         weights: str | None = None, **unknown: str) -> SmpModel:
    """U-Net (smp); default resnet18, depth 4, decoder 64-32-16-8 (unet:ENCODER,depth=D,decoder=...,weights=PATH)."""
    return _make("unet", encoder, extra, depth, decoder, weights, unknown)


def unetplusplus(encoder: str | None = None, *extra: str, depth: str | None = None, decoder: str | None = None,
                 weights: str | None = None, **unknown: str) -> SmpModel:
    """U-Net++ (smp, nested skip connections); same arguments and defaults as unet."""
    return _make("unetplusplus", encoder, extra, depth, decoder, weights, unknown)


def fpn(encoder: str | None = None, *extra: str, depth: str | None = None, decoder: str | None = None,
        weights: str | None = None, **unknown: str) -> SmpModel:
    """Feature Pyramid Network (smp); default resnet18, depth 4, decoder=PYRAMID-SEGMENTATION 64-32."""
    return _make("fpn", encoder, extra, depth, decoder, weights, unknown)


@lusbench.hookimpl
def register_models(register: Register) -> None:
    register("unet", unet)
    register("unetplusplus", unetplusplus)
    register("fpn", fpn)
