"""A tiny hand-built catalog whose right answers are obvious; tests and examples use it.

Shape of the known answers:
- ``rare1`` and ``rare2`` share the small brand RareCo (2 items); ``mega*`` share MegaBrand (7 items). From a
  history holding ``rare1``, the KG route must rank ``rare2`` above any MegaBrand item.
- ``drill1``..``drill3`` sit in the deep leaf Tools > Power Tools > Drills; ``hose1``/``hose2`` in Garden > Hoses.
- Users u0..u5 buy ``drill1`` then ``bits1`` (strong co-occurrence: item-CF must pair them);
  u6..u8 buy ``hose1`` then ``nozzle1``.
- ``cold1`` has no interaction at all (a cold item: only text and KG routes can reach it).
"""
from __future__ import annotations

from kgrec.catalog import Catalog, CatalogBuilder

_ITEMS = [
    # id, title, brand, category path
    ("drill1", "Cordless drill 18V with two batteries", "Boltix", ["Tools", "Power Tools", "Drills"]),
    ("drill2", "Hammer drill 20V brushless", "Boltix", ["Tools", "Power Tools", "Drills"]),
    ("drill3", "Compact cordless drill driver 12V", "MegaBrand", ["Tools", "Power Tools", "Drills"]),
    ("bits1", "Drill bit set titanium 29 pieces", "MegaBrand", ["Tools", "Power Tools", "Accessories"]),
    ("saw1", "Circular saw 7-1/4 inch", "MegaBrand", ["Tools", "Power Tools", "Saws"]),
    ("hammer1", "Claw hammer 16 oz fiberglass handle", "MegaBrand", ["Tools", "Hand Tools", "Hammers"]),
    ("hose1", "Garden hose 50 ft expandable", "Greenly", ["Garden", "Hoses"]),
    ("hose2", "Heavy duty rubber garden hose 100 ft", "Greenly", ["Garden", "Hoses"]),
    ("nozzle1", "Hose nozzle spray gun 8 patterns", "MegaBrand", ["Garden", "Watering"]),
    ("rare1", "Hand-forged carving chisel", "RareCo", ["Tools", "Hand Tools", "Chisels"]),
    ("rare2", "Hand-forged woodworking gouge", "RareCo", ["Tools", "Hand Tools", "Gouges"]),
    ("mega1", "Utility knife with 10 blades", "MegaBrand", ["Tools", "Hand Tools", "Knives"]),
    ("mega2", "Tape measure 25 ft", "MegaBrand", ["Tools", "Hand Tools", "Measuring"]),
    ("cold1", "Cordless drill 18V brushless kit with charger", "Boltix", ["Tools", "Power Tools", "Drills"]),
]

_INTERACTIONS = (
    [(f"u{u}", it) for u in range(6) for it in ("drill1", "bits1")]
    + [(f"u{u}", it) for u in range(6, 9) for it in ("hose1", "nozzle1")]
    + [("u9", "rare1"), ("u9", "mega1"), ("u10", "mega2"), ("u10", "saw1"), ("u11", "hammer1"),
       ("u11", "drill2"), ("u12", "hose2"), ("u12", "drill3"), ("u9", "hammer1")]
)


def tiny_catalog() -> Catalog:
    b = CatalogBuilder(name="tiny")
    for ext, title, brand, path in _ITEMS:
        b.add_item(ext, title=title, description=f"{title}. Sold by {brand}.", brand=brand, category_path=path)
    for u, it in _INTERACTIONS:
        b.add_interaction(u, it)
    return b.build()
