"""Study inputs and bookkeeping: sample sheets, provenance, run records, shards, runtime."""
