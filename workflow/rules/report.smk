# Run record and report helpers (issue 8).
# At the end of every successful (non-dry) run, write results/provenance/run.json: each
# output with its rule, inputs and sha256 (see neopain.runrecord); `neopain verify results/`
# re-hashes everything against it.


import time as _time

_RUN_START = _time.time()  # files older than this were not made by this run


onsuccess:
    from neopain.runrecord import write_record
    from neopain.stale import clear_stale

    clear_stale(".")

    try:
        _rec = write_record(".", config)
        print(f"run record: {_rec}", file=sys.stderr)
    except Exception as _exc:  # the run itself succeeded; say why the record is missing
        print(f"warning: run record not written: {_exc}", file=sys.stderr)


onerror:
    # a failed run never leaves stale tables that look current (neopain.stale)
    from neopain.stale import set_aside_stale

    for _p in set_aside_stale(".", _RUN_START, config["samples"]):
        print(f"stale, renamed {_p}.stale (see results/evaluation/STALE.md)", file=sys.stderr)
