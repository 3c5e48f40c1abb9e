"""How an ablated part's words find their component. Planners word a part many ways ("Adam-style
variance estimate", "the factored (Adafactor) state", "rank r of the projector"), so a part
and every alias in the registry become sets of tokens the same way:
  1. lower-cased; phrases that are one idea become one token (PHRASES: non-negative matrix
     factorization, factored, Adafactor -> nmf; variance, second-order moment -> second
     moment; 8-bit, eight bit -> 8bit; learning rate, step size -> lr; low-rank -> lowrank);
  2. split at everything but letters and digits (hyphens, apostrophes, underscores);
  3. stemmed (plural and common suffixes: -s, -ies, -ed, -ing, -ion, -ation, -ization, ...);
  4. synonyms to one token (SYNONYMS: projector, subspace -> proj; frequency, gap,
     interval, T -> gap; r -> rank; alpha -> scale; variance ...);
  5. fillers dropped (FILLERS: the, of, a, mechanism, method, component, the optimizers'
     names, ...).
Words in parentheses are extra evidence: they count when they match and are not held
against a component when they do not. A component's score is its best alias's weighted
Jaccard similarity between the alias and the part's words outside parentheses, where a word
of the part that another alias of the same component has also counts as a match:
    (W(alias & words) + W(outside & component's words - alias)) / W(alias | outside).
A token weighs 1 / (how many components use it), or 1 if none does: a token every GaLore
part shares ("proj") counts less than one that only one part has ("rank"). The best
component is taken when it scores at least ACCEPT and no other is within MARGIN of it. When
others are that close and the best scores at least ACCEPT - MARGIN, the part is ambiguous
and the error names the candidates; otherwise it is unknown and the error names every
component, closest first.
"""

from __future__ import annotations

import difflib
import re
from functools import cache

from ..errors import PlanError
from .components import COMPONENTS, Component

PHRASES = [  # (regex, token): several words that are one idea, rewritten before splitting
    (r"non[- ]?negative matrix factori[sz]ations?|adafactor|factori[sz](ation|ed)|factored",
     "nmf"),
    (r"singular value decomposition", "svd"),
    (r"principal component analysis", "pca"),
    (r"(8|eight)[- ]?bits?|int8|quanti[sz](ed|ation)", "8bit"),
    (r"learning[- ]rates?|step[- ]sizes?", "lr"),
    (r"low[- ]rank", "lowrank"),
    (r"second[- ]order moments?|variances?", "second moment"),
]
SYNONYMS = {  # word -> the token it counts as (both stemmed)
    "projector": "proj", "projection": "proj", "subspace": "proj",
    "frequency": "gap", "interval": "gap", "period": "gap", "every": "gap", "t": "gap",
    "change": "update", "refresh": "update", "switch": "update", "recompute": "update",
    "normalization": "norm", "rms": "norm",
    "r": "rank", "dimension": "rank",
    "alpha": "scale",
    "estimation": "estimate", "estimator": "estimate",
    "matrices": "matrix",
    "one": "side", "two": "side", "both": "side", "single": "side", "number": "side",
    "choice": "choose", "type": "choose", "kind": "choose", "selection": "choose",
}
FILLERS = set("""the a an of in on for to with and or vs versus its their by from as s
    mechanism method component part module technique strategy approach scheme style based
    use using used only optimizer optimiser state effect role
    adalomo lomo galore adam adamw sgd apollo muon mini""".split())
ACCEPT = 0.6  # the least score that names a component
MARGIN = 0.15  # a runner-up this close makes the part ambiguous

SUFFIXES = ("izations", "isations", "ization", "isation", "ations", "ation", "ivity", "ions",
            "ion", "izing", "ising", "ized", "ised", "izes", "ises", "ize", "ise", "ings",
            "ing", "ives", "ive", "ed", "es", "e", "s")


def stem(word: str) -> str:
    """The word without its plural or a common suffix (at least three letters are kept)."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[:-len(suffix)]
    return word


_SYNONYMS = {stem(word): stem(token) for word, token in SYNONYMS.items()}
_FILLERS = {stem(word) for word in FILLERS}


def tokens(words: str) -> set[str]:
    """A wording's meaning as a set of tokens (the module docstring's steps 1 to 5)."""
    text = str(words).lower().replace("_", " ")
    for pattern, token in PHRASES:
        text = re.sub(rf"\b({pattern})\b", f" {token} ", text)
    result = set()
    for word in re.findall(r"[a-z0-9]+", text):
        token = _SYNONYMS.get(stem(word), stem(word))
        if token not in _FILLERS:
            result.add(token)
    return result


@cache
def _vocabulary() -> tuple[dict, dict]:
    """Each component's aliases as token sets, and each token's weight."""
    aliases = {c.name: [tokens(words) for words in c.words] for c in COMPONENTS}
    users: dict = {}
    for name, sets in aliases.items():
        for token in set().union(*sets):
            users[token] = users.get(token, 0) + 1
    return aliases, {token: 1 / count for token, count in users.items()}


def scores(part: str) -> dict[str, float]:
    """Every component's score for a wording (the module docstring's rule)."""
    aliases, weight = _vocabulary()
    inside = tokens(" ".join(re.findall(r"\(([^()]*)\)", part)))
    outside = tokens(re.sub(r"\([^()]*\)", " ", part)) or inside
    words = outside | inside

    def weighed(found: set) -> float:
        return sum(weight.get(token, 1.0) for token in found)

    result = {}
    for name, sets in aliases.items():
        own = set().union(*sets)
        result[name] = max((weighed(alias & words) + weighed((outside & own) - alias))
                           / weighed(alias | outside) for alias in sets)
    return result


def normalize(words: str) -> str:
    return re.sub(r"\s+", " ", str(words)).strip().strip(".:*").lower()


def component_for(part: str) -> Component:
    """The component a wording names (the module docstring's rule), or a PlanError naming
    the candidates."""
    score = scores(part)
    by_name = {c.name: c for c in COMPONENTS}
    closeness = {c.name: max(difflib.SequenceMatcher(None, normalize(part), a).ratio()
                             for a in c.words) for c in COMPONENTS}
    ranked = sorted(by_name, key=lambda name: (score[name], closeness[name]), reverse=True)
    best = score[ranked[0]]
    close = [name for name in ranked if score[name] >= best - MARGIN]
    if best >= ACCEPT and len(close) == 1:
        return by_name[ranked[0]]
    if best >= ACCEPT - MARGIN and len(close) > 1:
        raise PlanError(f"ambiguous ablated part {part!r}: it fits " + ", ".join(
            f"{name} ({score[name]:.2f})" for name in close) + "; name one of them")
    why = "" if tokens(part) else " (it has no word but fillers and optimizer names)"
    raise PlanError(f"unknown ablated part {part!r}{why}; known components, closest first: "
                    f"{', '.join(ranked)}")
