"""Operations around runs and their outputs, neither a run itself nor a query.

- ``nightly``: only new or changed scenes, with a run history;
- ``verify``: re-hash every recorded chunk, and repair what is missing or damaged;
- ``previous`` + ``diff``: keep the labels a run replaces, change maps against them (the
  codes and the matrix are :mod:`pipeline.change`);
- ``stac``: the STAC catalog of an output root; ``publish``: what runs do before and after
  writing (keep previous labels, change maps, manifest, catalog);
- ``demo``: ``make demo``, end to end on a synthetic archive.
"""
