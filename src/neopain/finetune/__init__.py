"""Fine-tuning and cascaded fine-tuning of a backbone on face crops."""
