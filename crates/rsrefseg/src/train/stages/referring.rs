//! Stage 3: RSRefSeg 2's referring objective (BCE + Dice + orthogonality + sample contrastive,
//! [`crate::loss::RefSegLoss`]) with the encoders of stages 1–2 frozen.
//!
//! The images of a step are encoded once on the inner (non-autodiff) backend — SigLIP vision and
//! Hiera + FPN get no gradient — and each encoding is reused for every expression of its scene.
//! The text tower, SigLIP's logit scale/bias, the prompter and SAM's prompt encoder and mask
//! decoder (and the loss head's scalars) are trained. With `tune_sam_encoder` SAM's image
//! encoder is fine-tuned too (as the paper tunes its encoders, here in full rather than through
//! LoRA), still once per scene; with `tune_siglip_vision` SigLIP's vision tower is fine-tuned
//! on the referring loss (stage 1's alignment is then its starting point, not a constraint).
//!
//! Two terms are added to the released recipe. With `dense_loss` > 0, the dense prompt itself is
//! scored (BCE + Dice against the referent's coverage of each mask-input pixel): stage 2 taught
//! SAM to segment from a coarse mask of its object on the SigLIP grid, and this term asks the
//! prompter for exactly that, where the mask terms reach the prompter only through SAM's decoder.
//! And SAM's IoU-head loss (MSE between the predicted IoU
//! and the IoU the mask reaches, as in stage 2). RSRefSeg 2 inherits a trained IoU head from SAM
//! and never trains it; the nano model's would otherwise drift away from its masks while the
//! decoder is fine-tuned, and the page shows the predicted IoU to the user.
//!
//! With `promptable_loss` > 0 stage 2's loss joins in, on the same scenes and encodings: trained
//! on the prompter's prompts alone, the decoder forgets the points, boxes and mask prompts of
//! stage 2 (after cycle 3k the nano model's answer from a perfect box alone had fallen to gIoU
//! 0.16, and a box added to a sentence changed almost nothing), which are what `segment --box/--point` and
//! the page's correction clicks give it.

use super::{index, masks, scenes_x01, tokens, StageLoss};
use crate::config::RsRefSegConfig;
use crate::encoders::TextTokenizer;
use crate::loss::{LossInputs, RefSegLoss};
use crate::model::ImageEncoding;
use crate::sam::image_encoder::ImageEncoderOutput;
use crate::sam::mask_decoder::HighResFeatures;
use crate::sam::Sam2ImageFeatures;
use crate::synth::StreamSample;
use crate::train::{SplitMix64, TrainModel};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

/// Which image encoders stage 3 fine-tunes (both frozen by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncoderTuning {
    /// SAM's image encoder (Hiera + FPN).
    pub sam_encoder: bool,
    /// SigLIP's vision tower: end-to-end vision–language adaptation, as the paper tunes its
    /// aligner (here in full rather than through LoRA).
    pub siglip_vision: bool,
}

/// Encode each scene of `samples` once (`v` `[scenes, grid², d1]`, SAM features per scene).
/// A frozen encoder runs on the inner (non-autodiff) backend and its output is lifted onto the
/// autodiff backend as a constant; a tuned one runs on the autodiff backend (still once per
/// scene, so its gradient sums over the scene's expressions).
fn scene_encoding<B: AutodiffBackend>(
    model: &TrainModel<B>,
    samples: &[StreamSample],
    tune: EncoderTuning,
    device: &B::Device,
) -> ImageEncoding<B> {
    let x01 = scenes_x01::<B>(samples, device);
    let clip_size = model.model.clip_size;
    let v = if tune.siglip_vision {
        model.model.siglip.vision_model.forward(crate::pre::clip_pixels(x01.clone(), clip_size))
    } else {
        let inner = model.model.siglip.vision_model.valid();
        Tensor::<B, 3>::from_inner(inner.forward(crate::pre::clip_pixels(x01.clone().inner(), clip_size)))
    };
    let sam = if tune.sam_encoder {
        model.model.sam.encode_image(crate::pre::sam_pixels(x01))
    } else {
        let enc = model.model.sam.valid().encode_image(crate::pre::sam_pixels(x01.inner()));
        let lift4 = |t: Tensor<B::InnerBackend, 4>| Tensor::<B, 4>::from_inner(t);
        Sam2ImageFeatures {
            image_embed: lift4(enc.image_embed),
            high_res: enc.high_res.map(|h| HighResFeatures { feat_s0: lift4(h.feat_s0), feat_s1: lift4(h.feat_s1) }),
            backbone: ImageEncoderOutput {
                trunk: enc.backbone.trunk.into_iter().map(lift4).collect(),
                fpn: enc.backbone.fpn.into_iter().map(lift4).collect(),
            },
            image_pe: lift4(enc.image_pe),
        }
    };
    ImageEncoding { v, sam }
}

/// The scenes' encodings repeated per row (`rows[i]` = scene of row i).
fn per_row<B: AutodiffBackend>(scenes: ImageEncoding<B>, rows: &[usize], device: &B::Device) -> ImageEncoding<B> {
    let idx = index::<B>(rows, device);
    let ImageEncoding { v, sam } = scenes;
    ImageEncoding {
        v: v.select(0, idx.clone()),
        sam: Sam2ImageFeatures {
            image_embed: sam.image_embed.select(0, idx.clone()),
            high_res: sam.high_res.map(|h| HighResFeatures {
                feat_s0: h.feat_s0.select(0, idx.clone()),
                feat_s1: h.feat_s1.select(0, idx.clone()),
            }),
            backbone: sam.backbone,
            image_pe: sam.image_pe,
        },
    }
}

/// The stage-3 loss of a batch of scenes: every expression of every scene.
pub fn loss<B: AutodiffBackend>(
    model: &TrainModel<B>,
    config: &RsRefSegConfig,
    tokenizer: &TextTokenizer,
    refseg: &RefSegLoss,
    samples: &[StreamSample],
    stage: &super::StageConfig,
    rng: &mut SplitMix64,
    device: &B::Device,
) -> Result<StageLoss<B>, String> {
    let (tune, correction_clicks) = (stage.encoder_tuning(), stage.correction_clicks);
    let mut rows = Vec::new();
    let mut sentences = Vec::new();
    let mut targets: Vec<&[u8]> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        for e in &s.expressions {
            rows.push(i);
            sentences.push(e.sent.as_str());
            targets.push(&s.scene.objects[e.target].mask);
        }
    }
    if rows.is_empty() {
        return Err("no expression in the batch".into());
    }
    let size = samples[0].scene.width;
    let scenes = scene_encoding(model, samples, tune, device);
    // Stage 2's interactive recipe on the same scenes and encodings (points, noisy boxes, coarse
    // masks, a correction click): the decoder and prompt encoder keep following a user's
    // prompts while they learn the prompter's.
    let promptable = if stage.promptable_loss > 0.0 {
        let grid = config.prompter.grid;
        Some(super::promptable::loss_with_features(&model.model.sam, samples, &scenes.sam, grid, rng, device)?)
    } else {
        None
    };
    let image = per_row(scenes, &rows, device);
    let (ids, mask) = tokens::<B>(tokenizer, config, &sentences, device)?;
    let out = model.model.query(&image, ids, Some(mask), true);
    // The second answer's prompts: the same sentence prompts, plus one correction click.
    let second = correction_clicks.then(|| (out.text.clone(), out.prompter.clone()));
    let [n, g2, d] = image.v.dims();
    let g = (g2 as f64).sqrt() as usize;
    let gt = masks::<B>(&targets, size, device);
    // The first answer at the scene's size: scored by the IoU head, and (without gradient) where
    // the correction click goes.
    let first = crate::loss::bce_dice::upsample_logits(out.mask_logits.clone(), [size, size]);
    let reached = crate::loss::promptable::mask_iou(first.clone(), gt.clone());
    let iou = (out.iou.reshape([n]) - reached).powi_scalar(2).mean();
    let terms = refseg.forward(
        LossInputs {
            mask_logits: out.mask_logits,
            gt: gt.clone(),
            t1: out.prompter.t1.clone(),
            t2: out.prompter.t2.clone(),
            v: image.v.clone().swap_dims(1, 2).reshape([n, d, g, g]),
        },
        &model.decode_head,
    );
    let mut total = terms.total + iou.clone();
    let mut parts = vec![
        ("bce", terms.bce),
        ("dice", terms.dice),
        ("ortho", terms.ortho),
        ("contrastive", terms.contrastive),
        ("iou", iou),
    ];
    if let (true, Some(dense)) = (stage.dense_loss > 0.0, out.prompter.dense.clone()) {
        let m = dense.dims()[2];
        let target = coverage(gt.clone(), m);
        let term = (crate::loss::bce_dice::bce_with_logits(dense.clone(), target.clone())
            + crate::loss::bce_dice::dice(dense, target))
        .mul_scalar(stage.dense_loss);
        total = total + term.clone();
        parts.push(("dense", term));
    }
    if let Some((text, prompter)) = second {
        // SAM's interactive recipe on top of the sentence: a click where the first answer is
        // most wrong (as `rsrefseg eval --clicks` simulates the user), the decoder run again,
        // scored with the same mask terms and IoU head.
        let points = correction_points::<B>(first, &targets, size, device)?;
        let refinement = crate::model::Refinement { points: Some(points), boxes: None, previous_mask: None };
        let out2 = model.model.decode_refined(&image, text, prompter, refinement, true);
        let reached2 = crate::loss::promptable::mask_iou(
            crate::loss::bce_dice::upsample_logits(out2.mask_logits.clone(), [size, size]),
            gt.clone(),
        );
        let iou2 = (out2.iou.reshape([n]) - reached2).powi_scalar(2).mean();
        let terms2 = refseg.forward(
            LossInputs {
                mask_logits: out2.mask_logits,
                gt,
                t1: out2.prompter.t1,
                t2: out2.prompter.t2,
                v: image.v.swap_dims(1, 2).reshape([n, d, g, g]),
            },
            &model.decode_head,
        );
        // Only the mask terms: the prompter's own terms are the first answer's.
        let clicked = terms2.bce + terms2.dice + iou2;
        total = total + clicked.clone();
        parts.push(("clicked", clicked));
    }
    if let Some(p) = promptable {
        let term = p.total.mul_scalar(stage.promptable_loss);
        total = total + term.clone();
        parts.push(("promptable", term));
    }
    Ok(StageLoss { total, terms: parts })
}

/// The fraction of each of `m × m` cells a mask covers (area average).
///
/// `[n, 1, S, S]` (S a multiple of m) → `[n, 1, m, m]`
fn coverage<B: burn::tensor::backend::Backend>(gt: Tensor<B, 4>, m: usize) -> Tensor<B, 4> {
    let [n, _, s, _] = gt.dims();
    let f = s / m;
    gt.reshape([n, m, f, m, f]).mean_dim(4).mean_dim(2).reshape([n, 1, m, m])
}

/// One correction click per expression `[n, 1]` at the interior of the largest error of the
/// first answer (its logits at the scene's size `[n, 1, size, size]`, read back without
/// gradient), in the scene's pixels — the model's
/// input frame for synthetic scenes. An exact answer gets a padding point (label −1).
fn correction_points<B: AutodiffBackend>(
    first: Tensor<B, 4>,
    targets: &[&[u8]],
    size: usize,
    device: &B::Device,
) -> Result<crate::sam::prompt_encoder::PointPrompts<B>, String> {
    let n = targets.len();
    let logits: Vec<f32> = first.detach().into_data().convert::<f32>().to_vec().map_err(|e| format!("{e:?}"))?;
    let mut coords = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for (k, gt) in targets.iter().enumerate() {
        let pred: Vec<u8> = logits[k * size * size..(k + 1) * size * size].iter().map(|&z| u8::from(z > 0.0)).collect();
        match crate::data::clicks::corrective_click(&pred, gt, size, size) {
            // SAM's encoder adds half a pixel itself: give the pixel's corner.
            Some(c) => {
                coords.extend([c.x - 0.5, c.y - 0.5]);
                labels.push(i64::from(c.positive));
            }
            None => {
                coords.extend([0.0, 0.0]);
                labels.push(-1);
            }
        }
    }
    Ok(crate::sam::prompt_encoder::PointPrompts {
        coords: Tensor::from_data(burn::tensor::TensorData::new(coords, [n, 1, 2]), device),
        labels: Tensor::from_data(burn::tensor::TensorData::new(labels, [n, 1]), device),
    })
}
