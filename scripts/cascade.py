"""Snakemake entry point of cascaded fine-tuning: stage 1 (``cascade_stage1``: the
auxiliary expression set, one checkpoint per backbone) or stage 2 (``cascade``: from the
stage-1 checkpoint, a new head, one fold's training subjects)."""
import _bootstrap  # noqa: F401
from neopain.core import runtime


def main(sm):
    import logging

    import torch

    from neopain.finetune.jobs import aux_job, target_job

    p = sm.params
    torch.set_num_threads(max(1, sm.threads))
    common = dict(rule=sm.rule, backbone=sm.wildcards.backbone, layer=p.layer,
                  backbone_cfg=dict(p.backbone_cfg), weights_dir=p.weights_dir,
                  train_cfg=dict(p.train), device=p.device, precision=p.precision,
                  workers=p.workers, resume_dir=p.resume_dir, out_model=sm.output.model,
                  out_sidecar=sm.output.sidecar, logger=logging.getLogger("neopain.cascade"))
    if sm.rule == "cascade_stage1":
        aux_job(aux_samples=sm.input.aux, aux_data_root=p.aux_data_root,
                aux_labels=p.aux_labels, video_stride=p.video_stride, **common)
        return
    target_job(
        method="cascade", samples_path=sm.input.samples, labels=p.labels,
        positive_label=p.positive_label, data_root=p.data_root,
        video_ids=list(p.video_ids), crops=list(sm.input.crops),
        keyframes=list(sm.input.keyframes), split_path=sm.input.split,
        protocol=sm.wildcards.protocol, fold=int(sm.wildcards.fold), init=sm.input.stage1,
        out_scores=sm.output.scores, **common)


runtime.run(snakemake, main, cnn=True)  # noqa: F821
