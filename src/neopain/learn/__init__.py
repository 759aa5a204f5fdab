"""From feature tables to scores: splits, selection, classifiers, fusion, nested selection, evaluation."""
