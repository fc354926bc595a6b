"""A synthetic catalog with the shape of real e-commerce data, at any size, deterministic from a seed.

- a category tree of ``depth`` levels with random branching around ``branching``; names from a vocabulary
  (departments, product families, "<modifier> <noun>s" leaves), unique among siblings;
- power-law brand sizes; each brand has a home leaf and sells mostly there and in sibling leaves;
- power-law item popularity (Zipf exponent ``zipf``), titles "<Brand> <adjective> <modifier> <Noun> <model>",
  short descriptions naming the department, prices per leaf;
- users with latent tastes (up to three leaves, often siblings, and a favourite brand), so that a user's items
  concentrate in a few categories and brands; some events follow the previous item with its "complement"
  (an item of the next sibling leaf), which gives sequences an order signal and item-CF co-occurrences.

Everything is vectorised numpy; interactions are generated in chunks of users so 1M items and 10M
interactions take well under a minute and a few GiB. Tables are built directly, not through
:class:`~kgrec.catalog.CatalogBuilder`.
"""
from __future__ import annotations

import numpy as np

from graph_schema import BRAND, CATEGORY, HAS_BRAND, IN_CATEGORY, INTERACTED, ITEM, SUBCATEGORY_OF, USER
from kgrec.catalog import CATEGORY_SEP, Catalog, EdgeTable, NodeTable
from kgrec.errors import ConfigError
from kgrec.ids import IdMap
from loaders._common import LoadReport, finish

DEPARTMENTS = (
    "Tools", "Garden", "Kitchen", "Electronics", "Office", "Sports", "Toys", "Beauty", "Automotive", "Pets",
    "Health", "Home", "Outdoors", "Crafts", "Music", "Baby", "Industrial", "Lab", "Lighting", "Bath", "Travel",
    "Camping", "Fitness", "Cycling", "Photography", "Gaming", "Storage", "Cleaning", "Party", "Stationery",
)
GROUPS = (
    "Power", "Hand", "Outdoor", "Professional", "Compact", "Smart", "Classic", "Portable", "Heavy Duty",
    "Precision", "Kids", "Travel", "Eco", "Premium", "Wireless", "Electric", "Manual", "Modular", "Vintage",
    "Sport", "Studio", "Field", "Marine", "Garage",
)
FAMILIES = ("Tools", "Supplies", "Equipment", "Accessories", "Essentials", "Kits", "Systems", "Parts")
MODIFIERS = (
    "Cordless", "Stainless", "Folding", "Adjustable", "Magnetic", "Digital", "Waterproof", "Rechargeable", "Mini",
    "Large", "Insulated", "Ceramic", "Bamboo", "Carbon", "Silicone", "Aluminum", "LED", "Solar", "Rubber", "Wooden",
)
NOUNS = (
    "drill", "saw", "hammer", "wrench", "clamp", "hose", "nozzle", "kettle", "skillet", "blender", "lamp",
    "lantern", "speaker", "charger", "cable", "stapler", "binder", "racket", "helmet", "glove", "puzzle", "robot",
    "brush", "comb", "mirror", "filter", "pump", "jack", "leash", "collar", "bottle", "scale", "thermometer",
    "pipette", "beaker", "microscope", "tent", "backpack", "stove", "bench", "mat", "dumbbell", "rope", "lock",
    "light", "tripod", "lens", "controller", "headset", "bin", "shelf", "basket", "mop", "sponge", "balloon",
    "banner", "notebook", "pen", "marker", "easel", "ladder", "cart", "fan", "heater", "timer", "sensor", "valve",
    "fitting", "hinge", "bracket", "sander", "grinder", "router", "chisel", "level", "tape", "knife", "grater",
    "whisk", "kettlebell",
)
ADJECTIVES = (
    "Compact", "Durable", "Lightweight", "Ergonomic", "Professional", "Versatile", "Deluxe", "Essential", "Ultra",
    "Rugged", "Sleek", "Classic", "Advanced", "Heavy-Duty", "Quiet", "Fast", "Precise", "Portable", "Modern",
    "Reliable",
)
FEATURES = (
    "a long-lasting finish", "an ergonomic grip", "tool-free assembly", "a two-year warranty", "easy cleaning",
    "a compact storage case", "quick setup", "energy-saving operation", "reinforced edges", "a non-slip base",
    "a lifetime guarantee", "universal compatibility",
)
CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"
BRAND_SUFFIXES = ("", "", "", "co", "ix", "ly", "tek", "ora", " Labs", " Works", " & Co")
KINDS = np.array(["view", "cart", "buy"], dtype=object)
KIND_P = (0.7, 0.2, 0.1)
KIND_WEIGHT = np.array([1.0, 2.0, 3.0])
T0, SPAN, MEAN_GAP = 1_500_000_000, 2 * 365 * 86400, 3 * 86400  # histories start 2017–2019, ~3 days apart
CHUNK_EVENTS = 2_000_000
MAX_CATEGORIES = 5_000_000


def synthetic(n_items: int = 10_000, n_users: int | None = None, n_interactions: int | None = None, *,
              n_brands: int | None = None, depth: int = 3, branching: int | None = None, seed: int = 0,
              zipf: float = 1.1, min_history: int = 2, taste: float = 0.6, brand_loyalty: float = 0.15,
              follow: float = 0.25, missing_price: float = 0.05, name: str | None = None) -> Catalog:
    """A deterministic synthetic catalog (see the module docstring for its shape).

    Defaults: ``n_users = n_items``, ``n_interactions = 10 * n_users``, ``n_brands = n_items // 10``,
    ``branching`` so that there are about ``n_items / 40`` leaf categories. Each user gets at least
    ``min_history`` events (fewer if there are not enough). Of a user's events a share ``taste`` comes from
    their taste leaves, ``brand_loyalty`` from their favourite brand, the rest by global popularity; then a
    share ``follow`` is replaced by the complement of the previous item.
    """
    _check_types(n_items=n_items, n_users=n_users, n_interactions=n_interactions, n_brands=n_brands, depth=depth,
                 branching=branching, seed=seed, min_history=min_history, zipf=zipf, taste=taste,
                 brand_loyalty=brand_loyalty, follow=follow, missing_price=missing_price, name=name)
    n_users = n_items if n_users is None else n_users
    n_interactions = 10 * n_users if n_interactions is None else n_interactions
    n_brands = max(1, n_items // 10) if n_brands is None else n_brands
    if branching is None:
        branching = max(2, round((max(n_items, 0) / 40) ** (1 / max(depth, 1))))
    _check(n_items, n_users, n_interactions, n_brands, depth, branching, zipf, taste, brand_loyalty, follow,
           missing_price)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    tree = _Tree(rng, depth, branching)
    brand_names = _brand_names(rng, n_brands)
    brand, leaf = _assign(rng, tree, n_items, n_brands)
    pop = 1.0 / (rng.permutation(n_items) + 1.0) ** zipf
    keep = tree.prune(leaf)
    name = name or f"synthetic-{n_items}-s{seed}"
    items = _items(rng, tree, brand_names, brand, leaf, missing_price)
    pad = len(str(max(n_items - 1, 0)))
    nodes = {
        ITEM: NodeTable(IdMap((f"i{i:0{pad}d}" for i in range(n_items)), kind=ITEM), items),
        BRAND: NodeTable(IdMap(brand_names, kind=BRAND), {"name": _objects(brand_names)}),
        CATEGORY: NodeTable(IdMap(tree.paths[keep], kind=CATEGORY), {
            "name": _objects(tree.names[keep]), "level": tree.level[keep]}),
    }
    new = np.cumsum(keep) - 1  # category index after pruning
    child = np.flatnonzero(keep & (tree.parent >= 0))
    edges = {
        HAS_BRAND.rel: EdgeTable(np.arange(n_items), brand),
        IN_CATEGORY.rel: EdgeTable(np.arange(n_items), new[leaf]),
        SUBCATEGORY_OF.rel: EdgeTable(new[child], new[tree.parent[child]]),
    }
    users, inter = _interactions(seed, tree, brand, leaf, pop, n_users, n_interactions, min_history, taste,
                                 brand_loyalty, follow)
    nodes[USER] = NodeTable(users)
    edges[INTERACTED.rel] = inter
    report = LoadReport(name)
    return finish(Catalog(nodes, edges, name=name), report)


_INT_PARAMS = ("n_items", "n_users", "n_interactions", "n_brands", "depth", "branching", "seed", "min_history")
_OPTIONAL = ("n_users", "n_interactions", "n_brands", "branching", "name")


def _check_types(**params) -> None:
    """Whole numbers where counts are expected, finite numbers elsewhere, before any arithmetic on them."""
    problems = []
    for k, v in params.items():
        if v is None and k in _OPTIONAL:
            continue
        if k == "name":
            if not isinstance(v, str) or not v:
                problems.append(f"name must be a non-empty string (got {v!r})")
        elif k in _INT_PARAMS:
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                problems.append(f"{k} must be a whole number (got {v!r})")
            elif k in ("seed", "min_history") and v < 0:
                problems.append(f"{k} must be >= 0 (got {v})")
        elif not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) or not np.isfinite(v):
            problems.append(f"{k} must be a finite number (got {v!r})")
    if problems:
        raise ConfigError("synthetic(): " + "; ".join(problems))


def _check(n_items, n_users, n_interactions, n_brands, depth, branching, zipf, taste, brand_loyalty, follow,
           missing_price) -> None:
    problems = []
    if n_items < 1:
        problems.append(f"n_items must be at least 1 (got {n_items})")
    if not 1 <= n_brands <= max(n_items, 1):
        problems.append(f"n_brands must be between 1 and n_items={n_items} (got {n_brands})")
    if n_users < 0 or n_interactions < n_users or (n_users == 0 and n_interactions > 0):
        problems.append(f"need n_interactions >= n_users >= 1, or both 0 (got {n_interactions} and {n_users})")
    if not 1 <= depth <= 8:
        problems.append(f"depth must be between 1 and 8 (got {depth})")
    if branching < 1 or (branching + branching // 2) ** depth > MAX_CATEGORIES:
        problems.append(f"branching={branching} with depth={depth} gives too many categories; lower one")
    if zipf < 0:
        problems.append(f"zipf must be >= 0 (got {zipf})")
    for k, v in (("taste", taste), ("brand_loyalty", brand_loyalty), ("follow", follow),
                 ("missing_price", missing_price)):
        if not 0 <= v <= 1:
            problems.append(f"{k} must be between 0 and 1 (got {v})")
    if taste + brand_loyalty > 1:
        problems.append(f"taste + brand_loyalty must be at most 1 (got {taste + brand_loyalty})")
    if problems:
        raise ConfigError("synthetic(): " + "; ".join(problems))


def _objects(values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


class _Tree:
    """Categories in level order: ``parent``, ``level``, ``names``, ``paths`` (ids), the leaves, and for each
    leaf the range of its siblings (children of one parent are contiguous)."""

    def __init__(self, rng: np.random.Generator, depth: int, b: int) -> None:
        lo, hi = max(1, (b + 1) // 2), b + b // 2
        parent, sib = [np.full(b, -1)], [np.arange(b)]
        first, count = [np.zeros(b, np.int64)], [np.full(b, b)]  # sibling range, as offsets in the level
        prev = np.arange(b)
        for _ in range(1, depth):
            k = rng.integers(lo, hi + 1, size=len(prev))
            start = np.cumsum(k) - k
            parent.append(np.repeat(prev, k))
            sib.append(np.arange(k.sum()) - np.repeat(start, k))
            first.append(np.repeat(start, k))
            count.append(np.repeat(k, k))
            prev = prev[-1] + 1 + np.arange(k.sum())
        sizes = [len(p) for p in parent]
        offsets = np.cumsum([0, *sizes])
        self.parent = np.concatenate(parent)
        self.level = np.repeat(np.arange(depth), sizes)
        self.leaves = np.arange(offsets[-2], offsets[-1])
        self.first_sibling = first[-1] + offsets[-2]
        self.n_siblings = count[-1]
        self.names = np.empty(len(self.parent), dtype=object)
        self.word = np.zeros(len(self.parent), np.int64)  # index into the level's vocabulary
        for lvl in range(depth):
            vocab = _vocabulary(lvl, depth)
            s = slice(offsets[lvl], offsets[lvl + 1])
            # siblings take consecutive words from a random start (one per parent), so they never clash
            start = rng.integers(0, len(vocab), size=sizes[lvl - 1] if lvl else 1)
            par = self.parent[s] - offsets[lvl - 1] if lvl else np.zeros(sizes[0], np.int64)
            w = (start[par] + sib[lvl]) % len(vocab)
            rep = sib[lvl] // len(vocab)  # more siblings than words: numbered
            self.word[s] = w
            self.names[s] = [vocab[i] if r == 0 else f"{vocab[i]} {r + 1}" for i, r in zip(w.tolist(), rep.tolist())]
        self.paths = np.empty(len(self.parent), dtype=object)
        for c, (p, n) in enumerate(zip(self.parent.tolist(), self.names)):
            self.paths[c] = n if p < 0 else self.paths[p] + CATEGORY_SEP + n

    def random_sibling(self, leaf: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A random leaf with the same parent (global leaf indices in, out)."""
        i = leaf - self.leaves[0]
        return self.first_sibling[i] + (u * self.n_siblings[i]).astype(np.int64)

    def next_sibling(self, leaf: np.ndarray) -> np.ndarray:
        i = leaf - self.leaves[0]
        return self.first_sibling[i] + (leaf - self.first_sibling[i] + 1) % self.n_siblings[i]

    def prune(self, leaf_of_item: np.ndarray) -> np.ndarray:
        """Mask of categories that have an item at or below them."""
        keep = np.zeros(len(self.parent), bool)
        keep[leaf_of_item] = True
        for lvl in range(self.level.max(), 0, -1):
            c = np.flatnonzero(keep & (self.level == lvl))
            keep[self.parent[c]] = True
        return keep


def _vocabulary(level: int, depth: int) -> list[str]:
    if level == depth - 1:
        return [f"{MODIFIERS[w // len(NOUNS) % len(MODIFIERS)]} {_plural(NOUNS[w % len(NOUNS)]).title()}"
                for w in range(len(NOUNS) * len(MODIFIERS))]
    if level == 0:
        return list(DEPARTMENTS)
    return [f"{g} {f}" for f in FAMILIES for g in GROUPS]


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    """Unique pronounceable names: a fixed number of consonant–vowel syllables (unique by construction,
    through a random affine bijection of the index) and an optional suffix."""
    syl = [c + v for c in CONSONANTS for v in VOWELS]
    k = 2
    while len(syl) ** k < n:
        k += 1
    m = len(syl) ** k
    a = int(rng.integers(1, m))
    while np.gcd(a, m) != 1:
        a += 1
    code = (a * np.arange(n, dtype=object) + int(rng.integers(0, m))) % m  # object: no int64 overflow
    suffix = rng.integers(0, len(BRAND_SUFFIXES), size=n).tolist()
    out = []
    for c, s in zip(code.tolist(), suffix):
        parts = []
        for _ in range(k):
            c, r = divmod(c, len(syl))
            parts.append(syl[r])
        out.append("".join(parts).capitalize() + BRAND_SUFFIXES[s])
    return out


def _zipf_weights(rng: np.random.Generator, n: int, a: float) -> np.ndarray:
    w = 1.0 / (rng.permutation(n) + 1.0) ** a
    return w / w.sum()


def _assign(rng: np.random.Generator, tree: _Tree, n_items: int, n_brands: int) -> tuple[np.ndarray, np.ndarray]:
    """Brand and leaf of each item: every brand gets one item, the rest by power-law brand size; an item sits
    in its brand's home leaf (75%), a sibling of it (17%) or anywhere (8%)."""
    brand = np.concatenate([np.arange(n_brands),
                            rng.choice(n_brands, n_items - n_brands, p=_zipf_weights(rng, n_brands, 1.0))])
    brand = rng.permutation(brand)
    leaf_p = _zipf_weights(rng, len(tree.leaves), 0.8)
    home = tree.leaves[rng.choice(len(tree.leaves), n_brands, p=leaf_p)]
    leaf = home[brand]
    r = rng.random(n_items)
    sib = r >= 0.75
    leaf[sib] = tree.random_sibling(leaf[sib], rng.random(sib.sum()))
    anywhere = r >= 0.92
    leaf[anywhere] = tree.leaves[rng.choice(len(tree.leaves), anywhere.sum(), p=leaf_p)]
    return brand, leaf


def _items(rng: np.random.Generator, tree: _Tree, brand_names: list[str], brand: np.ndarray, leaf: np.ndarray,
           missing_price: float) -> dict[str, np.ndarray]:
    n = len(brand)
    word = tree.word[leaf]
    noun, mod = word % len(NOUNS), word // len(NOUNS) % len(MODIFIERS)
    dept = tree.names[_root(tree, leaf)]
    adj = rng.integers(0, len(ADJECTIVES), n)
    f1 = rng.integers(0, len(FEATURES), n)
    f2 = (f1 + rng.integers(1, len(FEATURES), n)) % len(FEATURES)
    letters = rng.integers(0, 26, (n, 2)) + ord("A")
    model = [f"{chr(a)}{chr(b)}-{d}" for a, b, d in zip(letters[:, 0].tolist(), letters[:, 1].tolist(),
                                                          rng.integers(10, 1000, n).tolist())]
    bn = [brand_names[b] for b in brand.tolist()]
    if tree.level.max() == 0:
        dept = tree.names[leaf]
    titles, descriptions = [], []
    for b, a, m, w, mo, d, x, y in zip(bn, adj.tolist(), mod.tolist(), noun.tolist(), model, dept.tolist(),
                                       f1.tolist(), f2.tolist()):
        titles.append(f"{b} {ADJECTIVES[a]} {MODIFIERS[m]} {NOUNS[w].title()} {mo}")
        descriptions.append(f"The {b} {mo} is {_an(ADJECTIVES[a])} {MODIFIERS[m].lower()} {NOUNS[w]} for "
                            f"{d.lower()}. It offers {FEATURES[x]} and {FEATURES[y]}.")
    base = np.exp(rng.normal(3.0, 1.0, len(tree.parent)))  # a price level per category
    price = np.floor(base[leaf] * np.exp(rng.normal(0.0, 0.3, n))) + 0.99
    price[rng.random(n) < missing_price] = np.nan
    return {"title": _objects(titles), "description": _objects(descriptions), "price": price}


def _root(tree: _Tree, c: np.ndarray) -> np.ndarray:
    c = c.copy()
    for _ in range(tree.level.max()):
        up = tree.parent[c]
        c = np.where(up >= 0, up, c)
    return c


class _Sampler:
    """Draw items within groups (a leaf, a brand, or one global group) in proportion to their popularity."""

    def __init__(self, group: np.ndarray, weight: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(group, kind="stable")
        self.cum = np.cumsum(weight[self.order])
        g = group[self.order]
        self.start = np.searchsorted(g, np.arange(n_groups), "left")
        self.end = np.searchsorted(g, np.arange(n_groups), "right")
        c0 = np.r_[0.0, self.cum]
        self.lo, self.hi = c0[self.start], c0[self.end]

    def size(self, g: np.ndarray) -> np.ndarray:
        return self.end[g] - self.start[g]

    def sample(self, g: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cum, self.lo[g] + u * (self.hi[g] - self.lo[g]), side="right")
        return self.order[np.clip(pos, self.start[g], self.end[g] - 1)]


def _interactions(seed, tree: _Tree, brand, leaf, pop, n_users, n_interactions, min_history, taste,
                  brand_loyalty, follow) -> tuple[IdMap, EdgeTable]:
    n_items = len(leaf)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    everyone = _Sampler(np.zeros(n_items, np.int64), pop, 1)
    by_leaf = _Sampler(leaf, pop, len(tree.parent))
    by_brand = _Sampler(brand, pop, int(brand.max()) + 1)

    def with_items(candidate: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        return np.where(by_leaf.size(candidate) > 0, candidate, fallback)

    # each item's complement: a popular item of the next sibling leaf (drill -> drill bits)
    comp = by_leaf.sample(with_items(tree.next_sibling(leaf), leaf), rng.random(n_items))
    # user tastes: a leaf drawn through a popular item, two more leaves often its siblings, a brand from it
    zeros = np.zeros(n_users, np.int64)
    tastes = np.empty((n_users, 3), np.int64)
    tastes[:, 0] = leaf[everyone.sample(zeros, rng.random(n_users))]
    for j in (1, 2):
        near = with_items(tree.random_sibling(tastes[:, 0], rng.random(n_users)), tastes[:, 0])
        far = leaf[everyone.sample(zeros, rng.random(n_users))]
        tastes[:, j] = np.where(rng.random(n_users) < 0.6, near, far)
    fav_brand = brand[by_leaf.sample(tastes[:, 0], rng.random(n_users))]
    # history lengths: heavy-tailed, at least min_history each
    floor = min(min_history, n_interactions // n_users) if n_users else 0
    activity = rng.pareto(1.5, n_users) + 1.0
    counts = floor + (rng.multinomial(n_interactions - floor * n_users, activity / activity.sum())
                      if n_users else zeros)
    start_ts = T0 + (rng.random(n_users) * SPAN).astype(np.int64)

    src = np.empty(n_interactions, np.int64)
    dst, seq, ts = np.empty_like(src), np.empty_like(src), np.empty_like(src)
    kind = np.empty(n_interactions, np.int8)
    ends = np.cumsum(counts)
    bounds = np.searchsorted(ends, np.arange(CHUNK_EVENTS, n_interactions, CHUNK_EVENTS), side="right") + 1
    for k, (u0, u1) in enumerate(zip([0, *bounds.tolist()], [*bounds.tolist(), n_users])):
        if u1 <= u0:
            continue
        crng = np.random.default_rng(np.random.SeedSequence([seed, 2, k]))
        c = counts[u0:u1]
        e0, e1 = int(ends[u0] - c[0]), int(ends[u1 - 1])
        n = e1 - e0
        u = np.repeat(np.arange(u0, u1), c)
        first = np.repeat(np.cumsum(c) - c, c)
        pos = np.arange(n) - first
        r = crng.random(n)
        items = np.empty(n, np.int64)
        m = r < taste
        slot = np.searchsorted([0.6, 0.85], crng.random(m.sum()), side="right")
        items[m] = by_leaf.sample(tastes[u[m], slot], crng.random(m.sum()))
        m2 = (r >= taste) & (r < taste + brand_loyalty)
        items[m2] = by_brand.sample(fav_brand[u[m2]], crng.random(m2.sum()))
        m3 = r >= taste + brand_loyalty
        items[m3] = everyone.sample(np.zeros(m3.sum(), np.int64), crng.random(m3.sum()))
        f = np.flatnonzero((pos > 0) & (crng.random(n) < follow))
        out = items.copy()
        out[f] = comp[items[f - 1]]
        gaps = 1 + crng.exponential(MEAN_GAP, n).astype(np.int64)
        csum = np.cumsum(gaps)
        src[e0:e1], dst[e0:e1], seq[e0:e1] = u, out, pos
        ts[e0:e1] = start_ts[u] + csum - (csum[first] - gaps[first])
        kind[e0:e1] = np.searchsorted(np.cumsum(KIND_P)[:-1], crng.random(n), side="right")
    pad = len(str(max(n_users - 1, 0)))
    users = IdMap((f"u{i:0{pad}d}" for i in range(n_users)), kind=USER)
    return users, EdgeTable(src, dst, {"seq": seq, "ts": ts, "weight": KIND_WEIGHT[kind], "kind": KINDS[kind]})


def _an(word: str) -> str:
    return f"{'an' if word[0] in 'AEIOU' else 'a'} {word.lower()}"
