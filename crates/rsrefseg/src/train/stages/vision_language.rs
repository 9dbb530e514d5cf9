//! Stage 1: nano vision–language pretraining with SigLIP's sigmoid loss ([`crate::loss::sigmoid`]).
//!
//! A batch is a few scenes and every referring expression the generator wrote for them. Two
//! families of pairs, both scored as `exp(logit_scale) · cos + logit_bias` with SigLIP's own
//! scalars (those the prompter's dense prompt uses):
//! - **patches**: each expression against every SigLIP patch of its own image, labelled with the
//!   fraction of the patch its object covers — the dense prompt's geometry;
//! - **regions**: every referred object (its patches pooled by coverage) against every
//!   expression of the batch, labelled 1 where the expression names that object — SigLIP's
//!   batch-wide contrast, at the level of regions.

use super::{scenes_x01, tokens, StageLoss};
use crate::config::RsRefSegConfig;
use crate::encoders::TextTokenizer;
use crate::loss::sigmoid::{pair_logits, sigmoid_loss};
use crate::model::RsRefSeg;
use crate::pre::clip_pixels;
use crate::synth::stream::cell_coverage;
use crate::synth::StreamSample;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The expressions of a batch with their image and coverage of the SigLIP grid.
pub struct Captions<'a> {
    pub sentences: Vec<&'a str>,
    /// Image of each sentence.
    pub image: Vec<usize>,
    /// Distinct referred object of each sentence (index into `regions`).
    pub region: Vec<usize>,
    /// Per region: (image, coverage of each of the g² patches).
    pub regions: Vec<(usize, Vec<f32>)>,
}

pub fn captions<'a>(samples: &'a [StreamSample], grid: usize) -> Captions<'a> {
    let mut c = Captions { sentences: vec![], image: vec![], region: vec![], regions: vec![] };
    let mut seen: Vec<((usize, usize), usize)> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let cell = s.scene.width / grid;
        for e in &s.expressions {
            let key = (i, e.target);
            let r = match seen.iter().find(|(k, _)| *k == key) {
                Some((_, r)) => *r,
                None => {
                    let cov = cell_coverage(&s.scene.objects[e.target], s.scene.height, s.scene.width, cell);
                    c.regions.push((i, cov));
                    seen.push((key, c.regions.len() - 1));
                    c.regions.len() - 1
                }
            };
            c.sentences.push(&e.sent);
            c.image.push(i);
            c.region.push(r);
        }
    }
    c
}

/// The stage-1 loss of a batch of scenes (`patches + regions`).
pub fn loss<B: Backend>(
    model: &RsRefSeg<B>,
    config: &RsRefSegConfig,
    tokenizer: &TextTokenizer,
    samples: &[StreamSample],
    device: &B::Device,
) -> Result<StageLoss<B>, String> {
    let grid = config.prompter.grid;
    let caps = captions(samples, grid);
    if caps.sentences.is_empty() {
        return Err("no expression in the batch".into());
    }
    let (n, r, g2) = (caps.sentences.len(), caps.regions.len(), grid * grid);
    let x01 = scenes_x01::<B>(samples, device);
    let v = model.siglip.vision_model.forward(clip_pixels(x01, model.clip_size)); // [b, g², d]
    let d = v.dims()[2];
    let (ids, mask) = tokens::<B>(tokenizer, config, &caps.sentences, device)?;
    let t = model.siglip.text_model.forward(ids, Some(mask)).t_sent; // [n, d]
    let scale = model.siglip.logit_scale.val();
    let bias = model.siglip.logit_bias.val();

    // Patches: each sentence against the g² patches of its own image.
    let v_n = v.clone().select(0, super::index(&caps.image, device)); // [n, g², d]
    let vn = crate::loss::l2_normalize(v_n, 2);
    let tn = crate::loss::l2_normalize(t.clone(), 1).reshape([n, d, 1]);
    let cos = vn.matmul(tn).reshape([n, g2]);
    let patch_logits = cos * scale.clone().exp().reshape([1, 1]) + bias.clone().reshape([1, 1]);
    let cov: Vec<f32> = caps.region.iter().flat_map(|&k| caps.regions[k].1.iter().copied()).collect();
    let patch_labels = Tensor::<B, 2>::from_data(TensorData::new(cov, [n, g2]), device);
    let patches = sigmoid_loss(patch_logits, patch_labels);

    // Regions: coverage-weighted mean of the image's patches, against every sentence.
    let weights: Vec<f32> = caps
        .regions
        .iter()
        .flat_map(|(_, cov)| {
            let s: f32 = cov.iter().sum::<f32>().max(1e-6);
            cov.iter().map(move |c| c / s)
        })
        .collect();
    let w = Tensor::<B, 3>::from_data(TensorData::new(weights, [r, 1, g2]), device);
    let region_img: Vec<usize> = caps.regions.iter().map(|(i, _)| *i).collect();
    let pooled = w.matmul(v.select(0, super::index(&region_img, device))).reshape([r, d]);
    let mut labels = vec![0f32; r * n];
    for (j, &k) in caps.region.iter().enumerate() {
        labels[k * n + j] = 1.0;
    }
    let region_labels = Tensor::<B, 2>::from_data(TensorData::new(labels, [r, n]), device);
    let regions = sigmoid_loss(pair_logits(pooled, t, scale, bias), region_labels);

    let total = patches.clone() + regions.clone();
    Ok(StageLoss { total, terms: vec![("patches", patches), ("regions", regions)] })
}

/// Held-out check of stage 1: for each expression, is its object the best-scoring of the
/// scene's referred objects (region retrieval), and does the best-scoring patch lie on it?
/// Returns (region accuracy, patch accuracy).
pub fn retrieval_accuracy<B: Backend>(
    model: &RsRefSeg<B>,
    config: &RsRefSegConfig,
    tokenizer: &TextTokenizer,
    samples: &[StreamSample],
    device: &B::Device,
) -> Result<(f64, f64), String> {
    let grid = config.prompter.grid;
    let (mut region_hits, mut patch_hits, mut total) = (0usize, 0usize, 0usize);
    for s in samples {
        let one = std::slice::from_ref(s);
        let caps = captions(one, grid);
        if caps.sentences.is_empty() {
            continue;
        }
        let v = model.siglip.vision_model.forward(clip_pixels(scenes_x01::<B>(one, device), model.clip_size));
        let [_, g2, d] = v.dims();
        let (ids, mask) = tokens::<B>(tokenizer, config, &caps.sentences, device)?;
        let t = crate::loss::l2_normalize(model.siglip.text_model.forward(ids, Some(mask)).t_sent, 1);
        let vn = crate::loss::l2_normalize(v.reshape([g2, d]), 1);
        let cos: Vec<f32> = t.matmul(vn.transpose()).into_data().convert::<f32>().to_vec().map_err(|e| format!("{e:?}"))?;
        for (j, &k) in caps.region.iter().enumerate() {
            let row = &cos[j * g2..(j + 1) * g2];
            let score = |cov: &[f32]| -> f32 {
                let s: f32 = cov.iter().sum::<f32>().max(1e-6);
                cov.iter().zip(row).map(|(c, x)| c * x).sum::<f32>() / s
            };
            let best = (0..caps.regions.len())
                .max_by(|&a, &b| score(&caps.regions[a].1).total_cmp(&score(&caps.regions[b].1)))
                .unwrap_or(0);
            region_hits += usize::from(best == k);
            let top = (0..g2).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
            patch_hits += usize::from(caps.regions[k].1[top] > 0.0);
            total += 1;
        }
    }
    let t = total.max(1) as f64;
    Ok((region_hits as f64 / t, patch_hits as f64 / t))
}
