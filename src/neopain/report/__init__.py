"""The report: landing page, result pages, the study's headline."""
