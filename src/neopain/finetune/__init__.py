"""Fine-tuning and cascaded fine-tuning of a backbone on face crops: ``settings``, ``data``
(image sets), ``folds`` (train/validation/test rows), ``network``, ``augment``, ``train``
(the loop), ``resume`` (its saved state), ``jobs`` (the DAG's jobs) and ``compare`` (frozen
vs fine-tuned vs cascaded); the checkpoint format is :mod:`neopain.features.checkpoint`."""
