"""The CLIP backbone of every method: image embeddings at the Re-ID input size, and text embeddings of
token-embedding sequences (so pseudo-words can be injected).

Loaded by hub id or local folder (`CLIPModel.from_pretrained`), or built tiny and random offline. Two
changes to stock CLIP, both made once at load time:
- the vision position embeddings are interpolated (2D bicubic on the patch grid; CLIP-ReID's is bilinear)
  from the square pre-training grid to the Re-ID grid (256x128 / patch 16 -> 16x8), and the module then
  checks that inputs have exactly that size, instead of re-interpolating on every forward;
- placeholder tokens (`<ph_s>`, `<ph_c>`, `<ph_x1>`...) are added to the tokenizer and the token-embedding
  table, so templates tokenize to one id per pseudo-word; their rows are overwritten at injection time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dppp.foundation.errors import ConfigError
from dppp.trainer.clip.config import BackboneSettings

# transformers (seconds to import) and tiny_clip.py, which imports it, are imported inside the functions
# that load or check a CLIP: trainer/methods/model.py, and through it the training loop, import this module,
# and pay for transformers only when a CLIP is built or checked.

VISION_PREFIXES = ("clip.vision_model.", "clip.visual_projection.")


class ReIDVisionEmbeddings(nn.Module):
    """CLIP's patch + class + position embeddings on a fixed, possibly non-square, patch grid."""

    def __init__(self, original: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.class_embedding = original.class_embedding
        self.patch_embedding = original.patch_embedding
        self.patch_size = original.patch_size
        self.grid = grid
        weight = interpolate_position_embeddings(original.position_embedding.weight.detach(), grid)
        self.position_embedding = nn.Embedding(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            self.position_embedding.weight.copy_(weight)
        self.register_buffer("position_ids", torch.arange(weight.shape[0]).unsqueeze(0), persistent=False)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        expected = (self.grid[0] * self.patch_size, self.grid[1] * self.patch_size)
        if (height, width) != expected:
            raise ValueError(
                f"images are {height}x{width}; this model was built for {expected[0]}x{expected[1]}"
            )
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding(self.position_ids)


def interpolate_position_embeddings(weight: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1 + n*n, D] (class first, square grid) -> [1 + gh*gw, D] by bicubic interpolation of the grid."""
    cls, patches = weight[:1], weight[1:]
    side = round(patches.shape[0] ** 0.5)
    if side * side != patches.shape[0]:
        raise ConfigError(f"vision position embeddings of {patches.shape[0]} patches are not a square grid")
    if (side, side) == tuple(grid):
        return weight.clone()
    square = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = nn.functional.interpolate(square, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([cls, resized.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)], dim=0)


class ClipBackbone(nn.Module):
    def __init__(
        self, clip: nn.Module, tokenizer, image_size: tuple[int, int], placeholder_tokens: list[str]
    ):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        tokenizer.add_tokens([t for t in placeholder_tokens if t not in tokenizer.get_vocab()])
        rows = clip.text_model.embeddings.token_embedding.num_embeddings
        if len(tokenizer) > rows:
            clip.text_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            clip.config.text_config.vocab_size = len(tokenizer)
        self.eos_token_id = tokenizer.eos_token_id
        patch = clip.config.vision_config.patch_size
        if image_size[0] % patch or image_size[1] % patch:
            raise ConfigError(
                f"image_size {list(image_size)} is not a multiple of the backbone's patch {patch}"
            )
        grid = (image_size[0] // patch, image_size[1] // patch)
        clip.vision_model.embeddings = ReIDVisionEmbeddings(clip.vision_model.embeddings, grid)
        self.image_size = tuple(image_size)
        # Temperatures are fixed by config; CLIP's own learned scale never trains. It is what a "backbone"
        # temperature means: 1 / the scale CLIP learned (clamped at 100, as CLIP clamps it).
        clip.logit_scale.requires_grad_(False)
        self.learned_temperature = 1 / min(float(clip.logit_scale.detach().exp()), 100.0)

    @property
    def embed_dim(self) -> int:
        return self.clip.config.projection_dim

    @property
    def token_dim(self) -> int:
        return self.clip.config.text_config.hidden_size

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.clip.text_model.embeddings.token_embedding

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] CLIP-normalised -> [B, embed_dim] projected class-token feature (not normalised)."""
        pooled = self.clip.vision_model(pixel_values=pixel_values).pooler_output
        return self.clip.visual_projection(pooled)

    def encode_text(self, input_ids: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        """Text features of given token embeddings [B, L, token_dim]; `input_ids` [B, L] only locate the
        end-of-text token whose final state is pooled (CLIP's text feature) and projected."""
        # transformers' CLIPTextModel takes only ids, so the embedding lookup's output is swapped for ours;
        # the rest (position embeddings, causal mask, encoder, final norm) is the library's own code.
        handle = self.token_embedding.register_forward_hook(lambda module, args, output: token_embeds)
        try:
            hidden = self.clip.text_model(input_ids=input_ids).last_hidden_state
        finally:
            handle.remove()
        eos = (input_ids == self.eos_token_id).int().argmax(dim=-1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos]
        return self.clip.text_projection(pooled)


def load_clip(config: BackboneSettings):
    """(CLIPModel, tokenizer) from `config.backbone`: "tiny", a local folder or a hub id. A folder that
    holds no CLIP, or a tokenizer whose vocabulary is not the text model's, is a ConfigError naming it."""
    if config.backbone == "tiny":
        from dppp.trainer.clip.tiny_clip import build_tiny_clip

        return build_tiny_clip(config.tiny, config.image_size[0], seed=config.init_seed)
    from transformers import CLIPModel

    tokenizer = check_backbone(config.backbone)
    try:
        clip = CLIPModel.from_pretrained(config.backbone)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot load CLIP from {config.backbone!r}: {_first_line(exc)}", path="train.model.backbone"
        ) from None
    return clip.eval(), tokenizer


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def check_backbone(backbone: str):
    """Check a CLIP folder or hub id without loading its weights (the driver does this before any worker
    starts) and return its tokenizer: a folder must hold a CLIP config, and the tokenizer's vocabulary
    must be the text model's (same size, end-of-text inside it)."""
    from transformers import AutoTokenizer, CLIPConfig

    check_clip_folder(backbone)
    try:
        clip_config = CLIPConfig.from_pretrained(backbone)
        tokenizer = AutoTokenizer.from_pretrained(backbone)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot load CLIP from {backbone!r}: {_first_line(exc)}", path="train.model.backbone"
        ) from None
    rows = clip_config.text_config.vocab_size
    if len(tokenizer) != rows or tokenizer.eos_token_id is None or tokenizer.eos_token_id >= rows:
        raise ConfigError(
            f"backbone {backbone!r}: its tokenizer has {len(tokenizer)} tokens but the text model's "
            f"vocabulary has {rows}: the tokenizer belongs to another model",
            path="train.model.backbone",
        )
    return tokenizer


def check_clip_folder(backbone: str) -> None:
    """A local backbone folder must hold a CLIP (config.json with model_type "clip"); a hub id is left to
    transformers."""
    path = Path(backbone)
    if not path.exists():
        if backbone.startswith((".", "/", "~")) or backbone.count("/") > 1:
            raise ConfigError(f"backbone folder {backbone!r} does not exist", path="train.model.backbone")
        return  # a hub id (org/name)
    where = "train.model.backbone"
    if not path.is_dir():
        raise ConfigError(f"backbone {backbone!r} is a file, not a CLIP folder", path=where)
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except FileNotFoundError:
        raise ConfigError(
            f"backbone folder {backbone!r} holds no config.json: not a saved CLIP model", path=where
        ) from None
    except (ValueError, AttributeError, OSError):
        raise ConfigError(
            f"backbone folder {backbone!r}: config.json is not a model config", path=where
        ) from None
    if model_type != "clip":
        raise ConfigError(
            f"backbone folder {backbone!r} holds a {model_type!r} model, not a CLIP", path=where
        )


def load_backbone(config: BackboneSettings, placeholder_tokens: list[str]) -> ClipBackbone:
    clip, tokenizer = load_clip(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)  # new token rows: deterministic
        backbone = ClipBackbone(clip, tokenizer, config.image_size, placeholder_tokens)
    if config.backbone == "tiny":
        backbone.learned_temperature = 0.01  # a random CLIP learned nothing: the value OpenAI's CLIPs learned
    return backbone
