"""From face crops to feature tables: backbones and weights, deep features, texture, strain, facial actions."""
