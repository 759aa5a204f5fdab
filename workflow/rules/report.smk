# Run record and report helpers (issue 8).
# At the end of every successful (non-dry) run, write results/provenance/run.json: each
# output with its rule, inputs and sha256 (see neopain.runrecord); `neopain verify results/`
# re-hashes everything against it.


onsuccess:
    from neopain.runrecord import write_record

    try:
        _rec = write_record(".", config)
        print(f"run record: {_rec}", file=sys.stderr)
    except Exception as _exc:  # the run itself succeeded; say why the record is missing
        print(f"warning: run record not written: {_exc}", file=sys.stderr)
