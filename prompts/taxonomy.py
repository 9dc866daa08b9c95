"""The attribute taxonomy: a YAML file validated and compiled into the tables the sampler reads (the YAML's
schema is prompts/taxonomy_schema.py, the compiled tables prompts/taxonomy_tables.py).

Every attribute is a *column* with a fixed value vocabulary, so a sampled person is a row of small integer
codes (fast to sample in bulk, cheap to compare for de-duplication). Columns come in sampling order:
the identity dimensions, then the camera's profile (picked first for each view), then the view dimensions.
Rules may only look at columns sampled before the dimension they weigh, which the loader checks.

Every problem is a ConfigError naming the file and the YAML path inside it, e.g.
`identity.hair_color.rules[0].when.age_group`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from dppp.foundation.config import read_yaml
from dppp.foundation.errors import ConfigError
from dppp.prompts.taxonomy_schema import (
    CAMERA_COLUMNS,
    Conditions,
    DimensionModel,
    TaxonomyModel,
    condition_value,
    yaml_path,
)
from dppp.prompts.taxonomy_tables import Camera, Column, Condition, Dimension
from dppp.prompts.templates import compile_templates

SHIPPED_TAXONOMY = Path(__file__).with_name("taxonomy.yaml")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# More rules than this on one dimension: the "some value stays possible" check would enumerate too many
# rule combinations, so it is left to sampling time.
MAX_CHECKED_RULES = 14


class Taxonomy:
    """A validated taxonomy. Build it with `load_taxonomy`."""

    def __init__(self, model: TaxonomyModel, *, source: str):
        self.model = model
        self.source = source
        self.palette = {name: tuple(rgb) for name, rgb in model.palette.items()}
        canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        self.hash = hashlib.sha256(canonical.encode()).hexdigest()
        self._build()
        # templates compile against the columns built above
        self.templates = compile_templates(self)

    # -- public lookups ----------------------------------------------------------------------------
    def rgb(self, colour: str) -> tuple[int, int, int]:
        """The RGB the palette gives a colour value (every value of a `*_color` dimension has one)."""
        try:
            return self.palette[colour]
        except KeyError:
            raise KeyError(f"colour {colour!r} is not in the taxonomy's palette ({self.source})") from None

    def values(self, name: str) -> tuple[str, ...]:
        """The values of a dimension or camera column, in taxonomy order."""
        return self.columns[self.column_index[name]].values

    @property
    def identity_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.identity_dims)

    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.view_dims)

    def as_dict(self) -> dict[str, Any]:
        """The taxonomy as plain data (for dataset.json); `hash` is the sha256 of its canonical JSON."""
        return self.model.model_dump(mode="json")

    # -- building and checking ---------------------------------------------------------------------
    def error(self, problem: str, *parts: Any) -> ConfigError:
        return ConfigError(problem, file=self.source, path=yaml_path(*parts) or None)

    def _build(self) -> None:
        model = self.model
        if not model.identity:
            raise self.error("needs at least one identity dimension", "identity")
        if not model.cameras:
            raise self.error("needs at least one camera", "cameras")
        for level, dims in (("identity", model.identity), ("view", model.view)):
            for name, dim in dims.items():
                if not _NAME.match(name):
                    raise self.error("a dimension name is lowercase letters, digits and _", level, name)
                if name in CAMERA_COLUMNS or (level == "view" and name in model.identity):
                    raise self.error(
                        f"'{name}' is already a name of the camera profile or identity", level, name
                    )
                if not dim.values:
                    raise self.error("has no values", level, name, "values")
                for value, weight in dim.values.items():
                    if not value.strip():
                        raise self.error("a value is an empty string", level, name, "values")
                    if not (math.isfinite(weight) and weight > 0):
                        raise self.error(
                            f"weight must be positive, got {weight}", level, name, "values", value
                        )
                if name.endswith("_color"):
                    for value in dim.values:
                        if value not in self.palette:
                            raise self.error(
                                f"colour '{value}' has no RGB in 'palette'", level, name, "values", value
                            )

        seen_camids: set[int] = set()
        for i, camera in enumerate(model.cameras):
            if camera.camid < 0 or camera.camid in seen_camids:
                raise self.error(
                    f"camid {camera.camid} must be a unique non-negative integer", "cameras", i, "camid"
                )
            seen_camids.add(camera.camid)
            if not (math.isfinite(camera.weight) and camera.weight > 0):
                raise self.error(f"weight must be positive, got {camera.weight}", "cameras", i, "weight")

        # Columns, in sampling order.
        columns: list[Column] = []

        def add(name: str, values: list[str]) -> None:
            columns.append(Column(name, tuple(values), {v: i for i, v in enumerate(values)}))

        for name, dim in model.identity.items():
            add(name, list(dim.values))
        camera_attrs = []
        for camera in model.cameras:
            attrs = {col: condition_value(getattr(camera, fld)) for col, fld in CAMERA_COLUMNS.items()}
            camera_attrs.append(attrs)
        for col in CAMERA_COLUMNS:
            add(col, list(dict.fromkeys(attrs[col] for attrs in camera_attrs)))
        for name, dim in model.view.items():
            add(name, list(dim.values))
        self.columns = tuple(columns)
        self.column_index = {c.name: i for i, c in enumerate(columns)}
        self.num_identity = len(model.identity)
        self.camera_columns = tuple(range(self.num_identity, self.num_identity + len(CAMERA_COLUMNS)))

        self.cameras = tuple(
            Camera(camid=cam.camid, weight=cam.weight, profile=attrs)
            for cam, attrs in zip(model.cameras, camera_attrs, strict=True)
        )
        # Per camera: the codes of its profile columns (a view copies them into its row).
        self.camera_codes = np.array(
            [
                [columns[c].index[attrs[columns[c].name]] for c in self.camera_columns]
                for attrs in camera_attrs
            ],
            dtype=np.int32,
        )
        self.camera_weights = np.array([cam.weight for cam in model.cameras], dtype=np.float64)

        self.identity_dims = tuple(
            self._dimension("identity", name, dim, available=self.column_index[name])
            for name, dim in model.identity.items()
        )
        self.view_dims = tuple(
            self._dimension("view", name, dim, available=self.column_index[name])
            for name, dim in model.view.items()
        )
        for dim in self.identity_dims + self.view_dims:
            if len(dim.rules) <= MAX_CHECKED_RULES:
                for mask in dim.consistent_masks():
                    dim.cumulative(mask)

    def condition(
        self, conditions: Conditions, *parts: Any, available: int | None = None, owner: str = ""
    ) -> Condition:
        """Compile a `when:` mapping. `available`: only columns before this index may be named."""
        if not conditions:
            raise self.error("needs at least one condition", *parts)
        terms = []
        tables = []
        for name, raw in conditions.items():
            where = (*parts, name)
            if name not in self.column_index:
                raise self.error(f"names an unknown dimension '{name}'", *where)
            column = self.column_index[name]
            if available is not None and column >= available:
                raise self.error(
                    f"'{name}' is not sampled before '{owner}', so a rule cannot depend on it", *where
                )
            vocab = self.columns[column]
            raws = raw if isinstance(raw, list) else [raw]
            if not raws:
                raise self.error("lists no value", *where)
            codes = set()
            for item in raws:
                value = condition_value(item)
                if value not in vocab.index:
                    known = ", ".join(vocab.values)
                    raise self.error(f"'{value}' is not a value of '{name}' (values: {known})", *where)
                codes.add(vocab.index[value])
            table = np.zeros(len(vocab.values), dtype=bool)
            table[list(codes)] = True
            terms.append((column, frozenset(codes)))
            tables.append(table)
        return Condition(tuple(terms), tuple(tables))

    def _dimension(self, level: str, name: str, model: DimensionModel, *, available: int) -> Dimension:
        column = self.column_index[name]
        values = tuple(model.values)
        index = self.columns[column].index
        rules = []
        for i, rule in enumerate(model.rules):
            condition = self.condition(
                rule.when, level, name, "rules", i, "when", available=available, owner=name
            )
            if not rule.weights:
                raise self.error("lists no value", level, name, "rules", i, "weights")
            factors = np.ones(len(values), dtype=np.float64)
            for value, factor in rule.weights.items():
                if value not in index:
                    raise self.error(
                        f"'{value}' is not a value of '{name}'", level, name, "rules", i, "weights", value
                    )
                if not (math.isfinite(factor) and factor >= 0):
                    raise self.error(
                        f"factor must be zero or positive, got {factor}",
                        level,
                        name,
                        "rules",
                        i,
                        "weights",
                        value,
                    )
                factors[index[value]] = factor
            rules.append((condition, factors))
        hidden = None
        if model.hidden_when is not None:
            if level != "identity":
                raise self.error(
                    "only identity dimensions can be hidden from the appearance", level, name, "hidden_when"
                )
            hidden = self.condition(
                model.hidden_when, level, name, "hidden_when", available=self.num_identity, owner=name
            )
            if any(column == self.column_index[name] for column, _ in hidden.terms):
                raise self.error(f"'{name}' cannot be hidden by its own value", level, name, "hidden_when")
        return Dimension(
            name=name,
            level=level,
            column=column,
            values=values,
            weights=np.array([model.values[v] for v in values], dtype=np.float64),
            rules=tuple(rules),
            hidden=hidden,
            source=self.source,
        )


def _validation_error(exc: ValidationError, file: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append((yaml_path(*err["loc"]), msg))
    path, problem = lines[0]
    problem += "".join(f"\n  at '{p}': {m}" for p, m in lines[1:])
    return ConfigError(problem, file=file, path=path or None)


def taxonomy_from_dict(data: dict[str, Any], *, source: str) -> Taxonomy:
    """A taxonomy from plain data, e.g. dataset.json's copy. That copy is stored with sorted keys, which
    loses the order dimensions are sampled in; a dimension's rules may only read earlier ones, so each
    level is put back in an order that respects every rule (dependencies first, then by name). The hash
    (of the canonical, key-sorted JSON) is the same whatever the order."""
    data = dict(data)
    for level in ("identity", "view"):
        dims = data.get(level)
        if not isinstance(dims, dict):
            continue
        needs = {}
        for name, spec in dims.items():
            spec = spec if isinstance(spec, dict) else {}
            conditions = [
                rule.get("when") or {} for rule in spec.get("rules") or [] if isinstance(rule, dict)
            ]
            conditions.append(spec.get("hidden_when") or {})
            needs[name] = {
                key for condition in conditions if isinstance(condition, dict) for key in condition
            } & set(dims)
        ordered: list[str] = []
        while len(ordered) < len(dims):
            ready = sorted(n for n in dims if n not in ordered and needs[n] <= set(ordered))
            if not ready:  # a cycle: leave the rest as it is and let validation name the problem
                ready = [n for n in dims if n not in ordered]
            ordered.append(ready[0])
        data[level] = {name: dims[name] for name in ordered}
    try:
        model = TaxonomyModel.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, source) from None
    return Taxonomy(model, source=source)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Read and validate a taxonomy YAML (None: the one shipped with the package)."""
    path = SHIPPED_TAXONOMY if path is None else Path(path)
    file = str(path)
    data = read_yaml(path)  # the experiment config's reader: same messages for a missing file or bad YAML
    if not isinstance(data, dict):
        raise ConfigError("a taxonomy is a mapping with identity, view, cameras and templates", file=file)
    try:
        model = TaxonomyModel.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, file) from None
    return Taxonomy(model, source=file)
