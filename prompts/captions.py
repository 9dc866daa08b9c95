"""The appearance caption of a person: the prompt's identity phrases alone, without the view's pose,
viewpoint, scene, light, weather or camera.

    captioner = AppearanceCaptioner(taxonomy)
    captioner(sample_json["attributes"])
    # 'a full-body photo of a teenage man, light skin, average build, average height, very short wavy brown
    #  hair, wearing a dark green jacket, denim jeans, black running shoes and sunglasses'

It is what the full prompt of every view of that person starts with (the same template slots, rendered
the same way), so all of a person's views share it: CLIP pretraining uses it as a second caption of each
image (trainer/pretraining/clip_pretrain.py), which ties every view of a person to one text, whatever its style.
"""

from __future__ import annotations

from typing import Any

from dppp.foundation.errors import DataError
from dppp.prompts.taxonomy import Taxonomy
from dppp.prompts.templates import Composer
from dppp.prompts.tokens import EstimatedTokenCounter


class AppearanceCaptioner:
    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        templates = taxonomy.templates
        # No token budget: identity phrases are never dropped (appearance slots), and views are not rendered.
        self.composer = Composer(
            taxonomy, templates.positive, templates.lists, EstimatedTokenCounter(), 1 << 30
        )
        self.columns = [(dim.column, dim.name) for dim in taxonomy.identity_dims]
        self.width = len(taxonomy.columns)

    def __call__(self, attributes: dict[str, Any]) -> str:
        row = [0] * self.width  # view columns stay 0: prepare() reads identity columns only
        for column, name in self.columns:
            value = attributes.get(name)
            try:
                row[column] = self.taxonomy.columns[column].index[str(value)]
            except KeyError:
                raise DataError(
                    f"attribute {name}={value!r} is not in the taxonomy {self.taxonomy.source}"
                ) from None
        return self.composer.join([p for p in self.composer.prepare(row) if p is not None])
