"""Snakemake entry point: fine-tune one backbone on one fold's training subjects."""
import _bootstrap  # noqa: F401
from neopain.core import runtime


def main(sm):
    import logging

    import torch

    from neopain.finetune.jobs import target_job

    p = sm.params
    torch.set_num_threads(max(1, sm.threads))
    target_job(
        rule=sm.rule, method="finetune", samples_path=sm.input.samples, labels=p.labels,
        positive_label=p.positive_label, data_root=p.data_root,
        video_ids=list(p.video_ids), crops=list(sm.input.crops),
        keyframes=list(sm.input.keyframes), split_path=sm.input.split,
        protocol=sm.wildcards.protocol, fold=int(sm.wildcards.fold),
        backbone=sm.wildcards.backbone, layer=p.layer, backbone_cfg=dict(p.backbone_cfg),
        weights_dir=p.weights_dir, train_cfg=dict(p.train), init="pretrained",
        device=p.device, precision=p.precision, workers=p.workers, resume_dir=p.resume_dir,
        out_model=sm.output.model, out_sidecar=sm.output.sidecar, out_scores=sm.output.scores,
        logger=logging.getLogger("neopain.finetune.jobs"))


runtime.run(snakemake, main, cnn=True)  # noqa: F821
