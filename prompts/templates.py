"""Templates: sampled attribute codes -> natural prompt text within the text encoder's token budget.

A template is a list of slots (see the `templates:` section of taxonomy.yaml). A slot's phrase depends only
on the few columns it reads, so phrases (and their token counts) are rendered once per distinct combination
and looked up afterwards: composing a prompt is a handful of dict look-ups and one join.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from dppp.foundation.errors import ConfigError
from dppp.prompts.tokens import SEPARATOR_TOKENS, SPECIAL_TOKENS, TokenCounter

if TYPE_CHECKING:
    from dppp.prompts.taxonomy_schema import SlotModel, TaxonomyModel
    from dppp.prompts.taxonomy_tables import Column, Condition


class Taxonomy(Protocol):
    """What templates compile and compose against: prompts.taxonomy.Taxonomy, which compiles its templates
    when it loads. Named here rather than imported, so taxonomy.py -> templates.py is the one direction."""

    model: TaxonomyModel
    source: str
    columns: tuple[Column, ...]
    column_index: dict[str, int]
    num_identity: int

    def error(self, problem: str, *parts: Any) -> ConfigError: ...

    def condition(
        self, conditions: Any, *parts: Any, available: int | None = None, owner: str = ""
    ) -> Condition: ...


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ARTICLE = object()  # stands for "a"/"an" until the next word is known
_SPACES = re.compile(r"\s+")
# Words starting with a vowel letter but a consonant sound, and the reverse.
_A_BEFORE = ("uni", "use", "usu", "uti", "eu", "one", "once")
_AN_BEFORE = ("hour", "honest", "honor", "heir")


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    word = word.lower()
    if word.startswith(_AN_BEFORE):
        return "an"
    if word.startswith(_A_BEFORE):
        return "a"
    return "an" if word[:1] in "aeiou" and word[:1] else "a"


def is_plural(noun_phrase: str) -> bool:
    """Plural nouns take no article ('blue jeans', 'white sneakers'): the last word ends in s, not ss."""
    last = noun_phrase.rsplit(" ", 1)[-1].lower()
    return last.endswith("s") and not last.endswith("ss")


@dataclass(frozen=True)
class Variant:
    condition: Condition | None
    parts: tuple[Any, ...]  # str literals, ("value", column), ("article", column | None)
    list_key: str | None
    priority: int
    appearance: bool


@dataclass
class Slot:
    name: str
    variants: tuple[Variant, ...]
    columns: tuple[int, ...]  # every column the variants read: the phrase cache key
    position: int = 0  # index in the template
    key: Any = field(repr=False, default=None)  # row -> cache key


@dataclass(frozen=True)
class Template:
    path: str  # e.g. templates.positive, for errors
    slots: tuple[Slot, ...]


@dataclass(frozen=True)
class Templates:
    lists: dict[str, str]
    positive: Template
    negative: Template


def compile_templates(taxonomy: Taxonomy) -> Templates:
    model = taxonomy.model.templates
    if not model.positive:
        raise taxonomy.error("needs at least one slot", "templates", "positive")
    for name, lead in model.lists.items():
        if not lead.strip():
            raise taxonomy.error("a list's lead phrase is empty", "templates", "lists", name)
    return Templates(
        lists=dict(model.lists),
        positive=_compile(taxonomy, model.positive, "positive", model.lists),
        negative=_compile(taxonomy, model.negative, "negative", model.lists),
    )


def _compile(taxonomy: Taxonomy, entries: list[SlotModel], which: str, lists: dict[str, str]) -> Template:
    slots: list[Slot] = []
    for i, entry in enumerate(entries):
        where = ("templates", which, i)
        if not _slot_name(entry.slot):
            raise taxonomy.error("a slot name is lowercase letters, digits and _", *where, "slot")
        if entry.list is not None and entry.list not in lists:
            raise taxonomy.error(
                f"list '{entry.list}' has no lead phrase under 'templates.lists'", *where, "list"
            )
        condition = taxonomy.condition(entry.when, *where, "when") if entry.when else None
        parts: list[Any] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(entry.text):
            parts.append(entry.text[pos : match.start()])
            pos = match.end()
            inner = match.group(1).strip()
            if inner == "a":
                parts.append(("article", None))
                continue
            name = inner[2:].strip() if inner.startswith("a:") else inner
            if name not in taxonomy.column_index:
                raise taxonomy.error(
                    f"slot '{entry.slot}' names '{{{inner}}}', which is no dimension", *where, "text"
                )
            column = taxonomy.column_index[name]
            parts.append(("article", column) if inner.startswith("a:") else ("value", column))
        parts.append(entry.text[pos:])
        if any("{" in p or "}" in p for p in parts if isinstance(p, str)):
            raise taxonomy.error(f"slot '{entry.slot}' has an unmatched brace", *where, "text")
        variant = Variant(
            condition, tuple(p for p in parts if p != ""), entry.list, entry.priority, entry.appearance
        )
        if slots and slots[-1].name == entry.slot:
            slots[-1].variants += (variant,)
        else:
            if any(s.name == entry.slot for s in slots):
                raise taxonomy.error(
                    f"variants of slot '{entry.slot}' must be listed together", *where, "slot"
                )
            slots.append(Slot(entry.slot, (variant,), (), len(slots)))
    for slot in slots:
        columns: set[int] = set()
        for variant in slot.variants:
            if variant.condition is not None:
                columns.update(column for column, _ in variant.condition.terms)
            columns.update(p[1] for p in variant.parts if isinstance(p, tuple) and p[1] is not None)
        slot.columns = tuple(sorted(columns))
        # itemgetter of no column would fail; a slot reading nothing has a constant phrase.
        slot.key = itemgetter(*slot.columns) if slot.columns else (lambda row: ())
    return Template(f"templates.{which}", tuple(slots))


def _slot_name(name: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9_]*$", name))


@dataclass(frozen=True, eq=False)
class Phrase:
    slot: str
    text: str
    tokens: int
    list_key: str | None
    priority: int
    appearance: bool
    position: int  # the slot's index in the template: ties in priority drop the later slot first


_MISSING = object()


class Composer:
    """Composes one template's text from a row of attribute codes, fitting `max_tokens`."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        template: Template,
        lists: dict[str, str],
        counter: TokenCounter,
        max_tokens: int,
    ):
        self.taxonomy = taxonomy
        self.template = template
        self.lists = lists
        self.counter = counter
        self.max_tokens = max_tokens
        self.lead_tokens = {key: counter.count(lead) for key, lead in lists.items()}
        self._caches: list[dict[Any, Phrase | None]] = [{} for _ in template.slots]
        # Slots reading a camera or view column change from view to view; the rest once per identity.
        num_identity = taxonomy.num_identity
        self._view_slots = [
            i for i, s in enumerate(template.slots) if any(c >= num_identity for c in s.columns)
        ]
        self._view_slot_set = frozenset(self._view_slots)
        self._fixed: dict[tuple[int, ...], Any] = {}
        self._bound_exact = self._drops_keep_leads()
        self.appearance_bound = self._appearance_bound()

    def compose(
        self, row: list[int], prepared: list[Phrase | None] | None = None
    ) -> tuple[str, tuple[str, ...]]:
        """(text, dropped slot names in the order they were dropped) for a full row of codes.
        `prepared`: this row's identity's `prepare(...)`, so only the view-dependent slots are looked up."""
        if prepared is None:
            prepared = self.prepare(row)
        if not self._view_slots:  # e.g. a fixed negative prompt: the same phrases, the same answer
            key = tuple(map(id, prepared))
            cached = self._fixed.get(key)
            if cached is not None:
                return cached[0]
            if len(self._fixed) > 4096:
                self._fixed.clear()
            phrases = [p for p in prepared if p is not None]
            total = self.count(phrases)
            result = (self.join(phrases), ()) if total <= self.max_tokens else self._fit(phrases, total)
            self._fixed[key] = (result, prepared)  # keeps the phrases alive, so their ids stay unique
            return result
        phrases = list(prepared)
        for i in self._view_slots:
            slot = self.template.slots[i]
            cache = self._caches[i]
            key = slot.key(row)
            phrase = cache.get(key, _MISSING)
            if phrase is _MISSING:
                phrase = cache[key] = self._render(slot, row)
            phrases[i] = phrase
        phrases = [p for p in phrases if p is not None]
        total = self.count(phrases)
        if total <= self.max_tokens:
            return self.join(phrases), ()
        return self._fit(phrases, total)

    def prepare(self, identity_row: list[int]) -> list[Phrase | None]:
        """The phrases of the slots that read identity columns only (None in the other slots' places):
        computed once per identity, shared by all its views."""
        prepared: list[Phrase | None] = [None] * len(self.template.slots)
        for i, (slot, cache) in enumerate(zip(self.template.slots, self._caches, strict=True)):
            if i in self._view_slot_set:
                continue
            key = slot.key(identity_row)
            phrase = cache.get(key, _MISSING)
            if phrase is _MISSING:
                phrase = cache[key] = self._render(slot, identity_row)
            prepared[i] = phrase
        return prepared

    def count(self, phrases: list[Phrase]) -> int:
        total = SPECIAL_TOKENS + SEPARATOR_TOKENS * max(len(phrases) - 1, 0)
        previous = None
        for phrase in phrases:
            total += phrase.tokens
            if phrase.list_key is not None and phrase.list_key != previous:
                total += self.lead_tokens[phrase.list_key]
            previous = phrase.list_key
        return total

    def join(self, phrases: list[Phrase]) -> str:
        parts = []
        i, n = 0, len(phrases)
        while i < n:
            key = phrases[i].list_key
            if key is None:
                parts.append(phrases[i].text)
                i += 1
                continue
            j = i
            while j < n and phrases[j].list_key == key:
                j += 1
            items = [p.text for p in phrases[i:j]]
            body = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
            parts.append(f"{self.lists[key]} {body}")
            i = j
        return ", ".join(parts)

    def _fit(self, phrases: list[Phrase], total: int) -> tuple[str, tuple[str, ...]]:
        # Lowest priority first; among equals the later slot, so the prompt's head stays intact.
        order = [
            i
            for _, _, i in sorted(
                (p.priority, -p.position, i) for i, p in enumerate(phrases) if not p.appearance
            )
        ]
        # Dropping a phrase saves at least its tokens and one separator (more when a list's lead goes
        # too), so `bound` never undercounts: the first k where it fits is at most one past the answer
        # in the common case; exact counts settle the rest.
        bound = total
        k = 0
        while bound > self.max_tokens and k < len(order):
            bound -= phrases[order[k]].tokens + SEPARATOR_TOKENS
            k += 1
        if bound > self.max_tokens:
            # The bound may still count list leads that dropping removed: settle it exactly.
            appearance = self.count(self._without(phrases, order))
            if appearance > self.max_tokens:
                raise self._too_long(f"need {appearance} tokens")
        while (
            not self._bound_exact
            and k > 1
            and self.count(self._without(phrases, order[: k - 1])) <= self.max_tokens
        ):
            k -= 1
        return self.join(self._without(phrases, order[:k])), tuple(phrases[i].slot for i in order[:k])

    @staticmethod
    def _without(phrases: list[Phrase], drop: list[int]) -> list[Phrase]:
        gone = set(drop)
        return [p for i, p in enumerate(phrases) if i not in gone]

    def _render(self, slot: Slot, row: list[int]) -> Phrase | None:
        for variant in slot.variants:
            if variant.condition is None or variant.condition.holds_row(row):
                text = self.render_text(variant, row)
                if not text:
                    return None
                return Phrase(
                    slot.name,
                    text,
                    self.counter.count(text),
                    variant.list_key,
                    variant.priority,
                    variant.appearance,
                    slot.position,
                )
        return None

    def render_text(self, variant: Variant, row: list[int]) -> str:
        columns = self.taxonomy.columns
        pieces: list[Any] = []
        for part in variant.parts:
            if isinstance(part, str):
                pieces.append(part)
            elif part[0] == "value":
                pieces.append(columns[part[1]].values[row[part[1]]])
            elif part[1] is not None and is_plural(columns[part[1]].values[row[part[1]]]):
                pieces.append("")
            else:
                pieces.append(_ARTICLE)
        for i, piece in enumerate(pieces):
            if piece is _ARTICLE:
                following = "".join(p for p in pieces[i + 1 :] if isinstance(p, str)).split()
                pieces[i] = article(following[0]) if following else ""
        return _SPACES.sub(" ", "".join(pieces)).strip()

    def _drops_keep_leads(self) -> bool:
        """True when dropping slots can never change how many list leads a prompt has: no droppable slot
        is in a list or sits between two list slots. Then a drop saves exactly its tokens and a separator."""
        slots = self.template.slots
        in_list = [any(v.list_key is not None for v in s.variants) for s in slots]
        for i, slot in enumerate(slots):
            if all(v.appearance for v in slot.variants):
                continue
            if in_list[i] or (any(in_list[:i]) and any(in_list[i + 1 :])):
                return False
        return True

    def check_appearance(self, identity_codes: Any, first_pid: int) -> None:
        """Appearance is never dropped, so it must fit the budget on its own: checked for every identity
        before any of its views is composed. Free when the worst case over all values fits; otherwise
        exact per identity (appearance slots read identity columns only), or the worst case if not."""
        if self.appearance_bound <= self.max_tokens:
            return
        num_identity = self.taxonomy.num_identity
        if any(
            c >= num_identity
            for slot in self.template.slots
            for c in slot.columns
            if self._has_appearance(slot)
        ):
            raise self._too_long(f"can need {self.appearance_bound} tokens")
        slots = [
            (slot, cache)
            for slot, cache in zip(self.template.slots, self._caches, strict=True)
            if self._has_appearance(slot)
        ]
        for offset, row in enumerate(identity_codes.tolist()):
            phrases = []
            for slot, cache in slots:
                key = slot.key(row)
                phrase = cache.get(key, _MISSING)
                if phrase is _MISSING:
                    phrase = cache[key] = self._render(slot, row)
                if phrase is not None and phrase.appearance:
                    phrases.append(phrase)
            tokens = self.count(phrases)
            if tokens > self.max_tokens:
                raise self._too_long(
                    f"need {tokens} tokens for pid {first_pid + offset} ({self.join(phrases)!r})"
                )

    @staticmethod
    def _has_appearance(slot: Slot) -> bool:
        return any(variant.appearance for variant in slot.variants)

    def _too_long(self, need: str) -> ConfigError:
        return ConfigError(
            f"the appearance slots (never dropped) {need}, more than max_tokens = {self.max_tokens}: "
            "shorten them or mark some as droppable (appearance: false)",
            file=self.taxonomy.source,
            path=self.template.path,
        )

    def _appearance_bound(self) -> int:
        """The most tokens the appearance slots can take: each slot's longest variant with its longest values."""
        columns = self.taxonomy.columns
        longest_value = {}
        total = SPECIAL_TOKENS
        count = 0
        previous_lists: set[str | None] = set()
        for slot in self.template.slots:
            worst = None
            for variant in slot.variants:
                if not variant.appearance:
                    continue
                tokens = self.counter.count("".join(p for p in variant.parts if isinstance(p, str)))
                for part in variant.parts:
                    if isinstance(part, tuple) and part[0] == "value":
                        column = part[1]
                        if column not in longest_value:
                            longest_value[column] = max(self.counter.count(v) for v in columns[column].values)
                        tokens += longest_value[column]
                    elif isinstance(part, tuple):
                        tokens += 1  # an article
                # A list's lead is paid where a run of its slots starts in the template (the most
                # runs there can be: dropping a slot between two runs only merges them).
                if variant.list_key is not None and variant.list_key not in previous_lists:
                    tokens += self.lead_tokens[variant.list_key]
                worst = tokens if worst is None else max(worst, tokens)
            if worst is not None:
                total += worst
                count += 1
            previous_lists = {variant.list_key for variant in slot.variants}
        return total + SEPARATOR_TOKENS * max(count - 1, 0)
