"""KILT page identity: which retrieved passage is which Wikipedia page, and the gold provenance pages.

KILT (Petroni et al. 2021) asks a knowledge-intensive system for an answer *and* the Wikipedia
pages that justify it; scoring those pages needs a rule for when a retrieved passage *is* a gold page.

Page identity
-------------
A retrieved passage and a gold provenance entry are both reduced to a :class:`Page`: its
``wikipedia_id`` (when the record carries one: a KILT provenance entry, or a passage whose
metadata has ``wikipedia_id``) and its title, normalised by :func:`normalize_title`. A retrieved
page matches a gold page

* by ``wikipedia_id`` when **both** sides have one (titles are then ignored: ids are stable
  across Wikipedia snapshots, titles are not);
* by normalised title otherwise (e.g. a passage corpus without ids scored against KILT gold,
  or FEVER's title-only evidence).

A bare string given as a retrieved page matches a gold page whose ``wikipedia_id`` equals it or
whose normalised title equals its normalised form (a page *titled* like another page's numeric id
would collide; this does not happen in practice and callers that care pass :class:`Page` objects).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from atlas_kit.tasks.qa import QAExample

__all__ = ["Page", "PageLike", "normalize_title", "decode_fever_title", "as_page", "gold_pages", "align_pages"]


# FEVER (and the Wikipedia dump it ships) escapes brackets and colons in page names, PTB style
_FEVER_ESCAPES = {
    "-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}", "-COLON-": ":",
}
_FEVER_RE = re.compile("|".join(re.escape(k) for k in _FEVER_ESCAPES))
# prefix for keys of retrieved pages that match no gold page: they can never equal a gold key
_MISS = "\x1f"


def decode_fever_title(title: str) -> str:
    """``Soul_Food_-LRB-film-RRB-`` -> ``Soul Food (film)``: FEVER page names as Wikipedia titles.

    Only the escaping is undone (case is kept) so the result is still a readable display title.
    """
    return _FEVER_RE.sub(lambda m: _FEVER_ESCAPES[m.group(0)], title).replace("_", " ").strip()


def normalize_title(title: str) -> str:
    """The form in which two titles of the same page compare equal.

    NFC-normalised, FEVER escapes and underscores decoded, whitespace collapsed, case-folded.
    Case-folding merges the rare pages that differ only by case ("Red" / "RED"), a small price for
    matching corpora that lower-case or re-capitalise titles.
    """
    text = unicodedata.normalize("NFC", decode_fever_title(str(title)))
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class Page:
    """A Wikipedia page as far as provenance scoring is concerned (``title`` is normalised)."""

    wikipedia_id: str | None = None
    title: str | None = None

    @property
    def key(self) -> str:
        """Its id if it has one, else its normalised title (what :func:`kilt_pages` returns)."""
        return self.wikipedia_id if self.wikipedia_id is not None else (self.title or "")

    def matches(self, gold: "Page") -> bool:
        """The page-identity rule: ids when both sides have one, normalised titles otherwise."""
        if self.wikipedia_id is not None and gold.wikipedia_id is not None:
            return self.wikipedia_id == gold.wikipedia_id
        return self.title is not None and self.title == gold.title


PageLike = Union[Page, str, Mapping[str, Any], Any]  # Any: Hit / Passage (attributes title, metadata)


def _clean_id(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _clean_title(value: Any) -> str | None:
    if value is None:
        return None
    text = normalize_title(value)
    return text or None


def as_page(obj: PageLike) -> Page:
    """A :class:`Page` from a Page, a provenance/passage dict, a Hit or Passage, or a title string.

    Dicts give ``wikipedia_id``/``title`` (a passage dict's ``metadata`` is looked into as well);
    Hit/Passage objects give ``metadata["wikipedia_id"]`` and ``.title``; a plain string becomes a
    title-only page (use :func:`align_pages` with strings to also match them against gold ids).
    """
    if isinstance(obj, Page):
        return obj
    if isinstance(obj, str):
        return Page(None, _clean_title(obj))
    if isinstance(obj, Mapping):
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        wid = obj.get("wikipedia_id", meta.get("wikipedia_id"))
        return Page(_clean_id(wid), _clean_title(obj.get("title", meta.get("title"))))
    meta = getattr(obj, "metadata", None) or {}
    wid = getattr(obj, "wikipedia_id", None)
    if wid is None and isinstance(meta, Mapping):
        wid = meta.get("wikipedia_id")
    return Page(_clean_id(wid), _clean_title(getattr(obj, "title", None)))


def gold_pages(example: "QAExample") -> list[list[Page]]:
    """The provenance sets of a loaded KILT/FEVER example, one list of distinct pages per set.

    Reads ``example.metadata["provenance"]``: a list (one per gold output) of lists of page dicts
    ``{"wikipedia_id", "title"}`` or title strings. Pages with neither id nor title are dropped.
    """
    out: list[list[Page]] = []
    for group in example.metadata.get("provenance") or []:
        pages: list[Page] = []
        for entry in group:
            page = as_page(entry)
            if (page.wikipedia_id is not None or page.title is not None) and page not in pages:
                pages.append(page)
        out.append(pages)
    return out


def align_pages(retrieved: Iterable[PageLike], gold: Sequence[Sequence[Page]]) -> tuple[list[str], list[set[str]]]:
    """Map retrieved pages and gold provenance to one key space, applying the page-identity rule.

    Each gold page is keyed by :attr:`Page.key`; a retrieved page that matches a gold page takes
    that page's key, any other retrieved page gets a private key that equals no gold key (but is
    the same for two retrievals of the same page, so de-duplication still works). The result feeds
    :func:`r_precision` and the ``*_at_k`` functions, which work on plain strings as KILT does.
    """
    gold_flat = [p for group in gold for p in group]
    gold_keys = [{p.key for p in group} for group in gold]
    keys: list[str] = []
    for item in retrieved:
        if isinstance(item, str):
            wid, title = item.strip(), _clean_title(item)
            hit = next((g for g in gold_flat if (g.wikipedia_id is not None and g.wikipedia_id == wid)
                        or (title is not None and g.title == title)), None)
            keys.append(hit.key if hit is not None else _MISS + (title or wid))
            continue
        page = as_page(item)
        hit = next((g for g in gold_flat if page.matches(g)), None)
        if hit is not None:
            keys.append(hit.key)
        else:
            own = f"id:{page.wikipedia_id}" if page.wikipedia_id is not None else f"title:{page.title}"
            keys.append(_MISS + own)
    return keys, gold_keys
