"""From a trained configuration to the bedside: exported artefacts and prediction."""
