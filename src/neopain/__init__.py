"""neopain: recognising pain in newborns' facial expressions by transfer learning.

The library behind the Snakemake workflow: one module per pipeline stage
(``track``, ``crop``, ``keyframes``, ``extract``, ``split``, ``select``,
``classify``, ``evaluate``) plus ``samples`` (sample-sheet validation) and
``provenance`` (hashes, atomic Parquet writes, schema metadata).
"""

__version__ = "0.1.0"
