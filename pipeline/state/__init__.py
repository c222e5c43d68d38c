"""What an output root remembers about itself, under ``<output>/_hgn/``.

- :mod:`~pipeline.state.hgnstore`: the small-object store those files live in (whole-object
  writes, conditional creates; local or ``s3://``);
- :mod:`~pipeline.state.ledger`: the resume ledger (finished chunks, scene states, the run
  fingerprint);
- :mod:`~pipeline.state.runlock`: one writer per output at a time;
- :mod:`~pipeline.state.integrity`: a checksum of every stored chunk, and the check of a
  store against them; :mod:`~pipeline.state.checks` puts that check together for one scene
  from its ledger records.
"""
