# Run record and report helpers (issue 8).
# At the end of every successful (non-dry) run, write results/provenance/run.json: each
# output with its rule, inputs and sha256 (see neopain.core.runrecord); `neopain verify results/`
# re-hashes everything against it.


import time as _time

_RUN_START = _time.time()  # files older than this were not made by this run


onsuccess:
    from neopain.report.landing import write_report_text
    from neopain.core.runrecord import write_record
    from neopain.core.stale import clear_stale

    clear_stale(".")

    try:
        _rec = write_record(".", config)
        print(f"run record: {_rec}", file=sys.stderr)
        write_report_text(".")  # landing text + Run section for `snakemake --report`
    except Exception as _exc:  # the run itself succeeded; say why the record is missing
        print(f"warning: run record not written: {_exc}", file=sys.stderr)


onerror:
    # a failed run never leaves stale tables that look current (neopain.core.stale)
    from neopain.core.stale import set_aside_stale

    for _p in set_aside_stale(".", _RUN_START, config["samples"]):
        print(f"stale, renamed {_p}.stale (see results/evaluation/STALE.md)", file=sys.stderr)


# The report's landing text and HTML result pages (issue 17). `snakemake --report` shows
# .html results inside the page. The workflow-level `report:` text (REPORT_TEXT,
# common/settings.smk) is the landing text plus the Run section from the run record, else
# the landing text, else (before any run) workflow/report/workflow.rst; the profile's
# report-metadata adds the landing numbers. Optional inputs (REPORT_OPTIONAL,
# common/targets.smk): Table 7 (strain.enabled), fine-tuning, the nested summary.
_RESULTS = "1. Results"


report: str(REPORT_TEXT) if REPORT_TEXT else "../report/workflow.rst"


rule report_pages:
    """Landing text, plain summary and HTML pages of every results table for the report."""
    input:
        unpack(lambda wc: REPORT_OPTIONAL),
        table5="results/evaluation/table5.parquet",
        table6="results/evaluation/table6.parquet",
        delong="results/evaluation/delong.parquet",
        per_subject="results/evaluation/per_subject.parquet",
        per_video="results/evaluation/per_video.parquet",
        chance="results/evaluation/chance.parquet",
        metrics="results/evaluation/metrics.parquet",
        qc="results/qc/tracking.parquet",
    output:
        landing="results/report/landing.rst",
        summary="results/report/summary.txt",
        facts="results/report/landing.json",
        table5=report("results/report/table5.html", caption="../report/table5.rst",
                      category=_RESULTS, subcategory="Tables 5 and 6"),
        table6=report("results/report/table6.html", caption="../report/table6.rst",
                      category=_RESULTS, subcategory="Tables 5 and 6"),
        delong=report("results/report/delong.html", caption="../report/delong.rst",
                      category=_RESULTS, subcategory="Comparisons"),
        per_subject=report("results/report/per_subject.html",
                           caption="../report/per_subject.rst", category=_RESULTS,
                           subcategory="Per subject and per recording"),
        per_video=report("results/report/per_video.html", caption="../report/per_video.rst",
                         category=_RESULTS, subcategory="Per subject and per recording"),
        metrics_csv=report("results/report/metrics.csv", caption="../report/metrics.rst",
                           category=_RESULTS, subcategory="All configurations"),
        qc_page=report("results/report/tracking_qc.html", caption="../report/qc.rst",
                       category="2. Tracking QC", subcategory="Summary"),
        **({"table7": report("results/report/table7.html", caption="../report/table7.rst",
                             category=_RESULTS, subcategory="Tables 5 and 6")}
           if STRAIN_ON else {}),
        **({"finetune": report("results/report/finetune.html",
                               caption="../report/finetune.rst", category=_RESULTS,
                               subcategory="Fine-tuning")}
           if FT_ENABLED else {}),
    params:
        evaluate=config["evaluate"],
        show_faces=config["report"]["show_faces"],
    log:
        "logs/report_pages.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/report_pages.py"
