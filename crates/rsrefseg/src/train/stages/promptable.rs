//! Stage 2: nano SAM promptable-segmentation pretraining (SAM's interactive recipe, at nano
//! scale): each object gets a first prompt — a point drawn inside it, its box with noise, or a
//! coarse mask like the prompter's dense prompt — and is decoded; then a correction click is
//! drawn from the error region of that prediction and decoded again with the previous mask
//! logits as the mask prompt. Both rounds are scored with [`crate::loss::promptable`]; one image
//! encoding serves every object of a scene and both rounds.
//!
//! Prompts are one fixed-size point list per object so that a batch mixes prompt kinds: a box is
//! its two corners with labels 2 and 3 (exactly how SAM's prompt encoder embeds boxes), unused
//! slots are padding points (label −1). Rows without a mask prompt get `no_mask_embed`.

use super::{index, masks, scenes_x01, StageLoss};
use crate::loss::promptable::promptable_loss;
use crate::pre::sam_pixels;
use crate::sam::mask_decoder::HighResFeatures;
use crate::sam::prompt_encoder::PointPrompts;
use crate::sam::{Sam2, Sam2ImageFeatures};
use crate::synth::{SceneObject, StreamSample};
use crate::train::SplitMix64;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// Point slots per object: two for the first prompt (a point uses one, a box both), one for the
/// correction click.
const SLOTS: usize = 3;
/// Most objects of one scene prompted per step.
pub const OBJECTS_PER_SCENE: usize = 4;

/// The first prompt of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptKind {
    Point,
    Box,
    Mask,
}

fn unit(rng: &mut SplitMix64) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn normal(rng: &mut SplitMix64) -> f32 {
    // Box–Muller.
    let u1 = unit(rng).max(1e-7);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// A pixel drawn uniformly among those where `pick(p)` holds, as a pixel-centre-free `(x, y)`.
fn draw_pixel(width: usize, n: usize, pick: impl Fn(usize) -> bool, rng: &mut SplitMix64) -> Option<(f32, f32)> {
    let count = (0..n).filter(|&p| pick(p)).count();
    if count == 0 {
        return None;
    }
    let k = (rng.next_u64() % count as u64) as usize;
    let p = (0..n).filter(|&p| pick(p)).nth(k)?;
    Some(((p % width) as f32, (p / width) as f32))
}

/// A coarse mask prompt like a dense prompt: the object's coverage of the `grid × grid` cells,
/// blurred by bilinear upsampling to `m × m`, turned into logits of a random sharpness with
/// noise (and sometimes a weaker copy of a distractor object).
fn coarse_mask(object: &SceneObject, other: Option<&SceneObject>, size: usize, grid: usize, m: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let cell = size / grid;
    let cov = crate::synth::stream::cell_coverage(object, size, size, cell);
    let distract = other.map(|o| crate::synth::stream::cell_coverage(o, size, size, cell));
    let sharp = 4.0 + 8.0 * unit(rng);
    let d_weight = 0.3 + 0.5 * unit(rng);
    let noise = 0.5 * unit(rng);
    let mut out = vec![0f32; m * m];
    for oy in 0..m {
        for ox in 0..m {
            // align_corners=True sampling of the cell grid.
            let sy = oy as f32 * (grid as f32 - 1.0) / (m as f32 - 1.0);
            let sx = ox as f32 * (grid as f32 - 1.0) / (m as f32 - 1.0);
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(grid - 1), (x0 + 1).min(grid - 1));
            let (ty, tx) = (sy - y0 as f32, sx - x0 as f32);
            let at = |c: &[f32]| {
                c[y0 * grid + x0] * (1.0 - ty) * (1.0 - tx)
                    + c[y0 * grid + x1] * (1.0 - ty) * tx
                    + c[y1 * grid + x0] * ty * (1.0 - tx)
                    + c[y1 * grid + x1] * ty * tx
            };
            let mut v = at(&cov);
            if let Some(d) = &distract {
                v = v.max(d_weight * at(d));
            }
            out[oy * m + ox] = sharp * (2.0 * v - 0.6) + noise * normal(rng);
        }
    }
    out
}

/// One prompted object.
struct Row {
    scene: usize,
    object: usize,
    kind: PromptKind,
}

/// Image features repeated per row (`rows[i]` = scene of row i).
fn features_for_rows<B: Backend>(f: &Sam2ImageFeatures<B>, rows: &[usize], device: &B::Device) -> Sam2ImageFeatures<B> {
    let idx = index::<B>(rows, device);
    Sam2ImageFeatures {
        image_embed: f.image_embed.clone().select(0, idx.clone()),
        high_res: f.high_res.as_ref().map(|h| HighResFeatures {
            feat_s0: h.feat_s0.clone().select(0, idx.clone()),
            feat_s1: h.feat_s1.clone().select(0, idx.clone()),
        }),
        backbone: f.backbone.clone(),
        image_pe: f.image_pe.clone(),
    }
}

/// Decode `n` rows from point lists and optional mask prompts (`has_mask[i]` selects between
/// the downscaled mask and `no_mask_embed`). Returns (low-res logits `[n,1,m,m]`, iou `[n,1]`).
fn decode<B: Backend>(
    sam: &Sam2<B>,
    features: &Sam2ImageFeatures<B>,
    points: (Vec<f32>, Vec<i64>),
    mask_prompt: Tensor<B, 4>,
    has_mask: &[bool],
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 2>) {
    let n = has_mask.len();
    let pe = &sam.sam_prompt_encoder;
    let coords = Tensor::<B, 3>::from_data(TensorData::new(points.0, [n, SLOTS, 2]), device);
    let labels = Tensor::<B, 2, Int>::from_data(TensorData::new(points.1, [n, SLOTS]), device);
    let prompts = pe.forward(Some(PointPrompts { coords, labels }), None, None, n);
    let flag: Vec<f32> = has_mask.iter().map(|&h| f32::from(h)).collect();
    let flag = Tensor::<B, 4>::from_data(TensorData::new(flag, [n, 1, 1, 1]), device);
    let dense = pe.mask_downscaling.forward(mask_prompt) * flag.clone() + prompts.dense * flag.neg().add_scalar(1.0);
    let out = sam.decode(features, prompts.sparse, dense, false, true);
    (out.masks, out.iou_pred)
}

/// The stage-2 loss of a batch of scenes (both rounds, averaged). `grid` is the cell grid the
/// coarse mask prompts are made on (the SigLIP grid, as the dense prompt's).
pub fn loss<B: Backend>(
    sam: &Sam2<B>,
    samples: &[StreamSample],
    grid: usize,
    rng: &mut SplitMix64,
    device: &B::Device,
) -> Result<StageLoss<B>, String> {
    let features = sam.encode_image(sam_pixels(scenes_x01::<B>(samples, device)));
    loss_with_features(sam, samples, &features, grid, rng, device)
}

/// [`loss`] on image features already computed (one row per scene of `samples`): the referring
/// stage's promptable term reuses its own encoding of the scenes.
pub fn loss_with_features<B: Backend>(
    sam: &Sam2<B>,
    samples: &[StreamSample],
    features: &Sam2ImageFeatures<B>,
    grid: usize,
    rng: &mut SplitMix64,
    device: &B::Device,
) -> Result<StageLoss<B>, String> {
    let size = samples[0].scene.width;
    let m = 4 * sam.sam_prompt_encoder.image_embedding_size[0];
    let mut rows: Vec<Row> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let mut objs: Vec<usize> = (0..s.scene.objects.len()).collect();
        for k in (1..objs.len()).rev() {
            objs.swap(k, (rng.next_u64() % (k as u64 + 1)) as usize);
        }
        for &o in objs.iter().take(OBJECTS_PER_SCENE) {
            let kind = match rng.next_u64() % 10 {
                0..=3 => PromptKind::Point,
                4..=6 => PromptKind::Box,
                _ => PromptKind::Mask,
            };
            rows.push(Row { scene: i, object: o, kind });
        }
    }
    if rows.is_empty() {
        return Err("no object in the batch".into());
    }
    let n = rows.len();
    let scene_of: Vec<usize> = rows.iter().map(|r| r.scene).collect();
    let features = features_for_rows(features, &scene_of, device);
    let objects: Vec<&SceneObject> = rows.iter().map(|r| &samples[r.scene].scene.objects[r.object]).collect();
    let gt = masks::<B>(&objects.iter().map(|o| o.mask.as_slice()).collect::<Vec<_>>(), size, device);

    // Round 1: the first prompt.
    let mut coords = vec![0f32; n * SLOTS * 2];
    let mut labels = vec![-1i64; n * SLOTS];
    let mut mask_data = vec![0f32; n * m * m];
    let mut has_mask = vec![false; n];
    for (i, (row, o)) in rows.iter().zip(&objects).enumerate() {
        match row.kind {
            PromptKind::Point => {
                let (x, y) = draw_pixel(size, size * size, |p| o.mask[p] != 0, rng).unwrap_or(o.centroid);
                coords[i * SLOTS * 2..i * SLOTS * 2 + 2].copy_from_slice(&[x, y]);
                labels[i * SLOTS] = 1;
            }
            PromptKind::Box => {
                let [x0, y0, x1, y1] = o.bbox;
                let (w, h) = (x1 - x0, y1 - y0);
                let cap = 20.0 * size as f32 / 1024.0;
                let mut jit = |side: f32| (0.1 * side * normal(rng)).clamp(-cap, cap);
                let b = [x0 + jit(w), y0 + jit(h), x1 - 1.0 + jit(w), y1 - 1.0 + jit(h)];
                let b = b.map(|v| v.clamp(0.0, size as f32 - 1.0));
                coords[i * SLOTS * 2..i * SLOTS * 2 + 4].copy_from_slice(&b);
                labels[i * SLOTS] = 2;
                labels[i * SLOTS + 1] = 3;
            }
            PromptKind::Mask => {
                let scene = &samples[row.scene].scene;
                let other = (scene.objects.len() > 1 && rng.next_u64() % 2 == 0).then(|| {
                    let k = (row.object + 1 + (rng.next_u64() % (scene.objects.len() as u64 - 1)) as usize) % scene.objects.len();
                    &scene.objects[k]
                });
                mask_data[i * m * m..(i + 1) * m * m].copy_from_slice(&coarse_mask(o, other, size, grid, m, rng));
                has_mask[i] = true;
            }
        }
    }
    let mask_prompt = Tensor::<B, 4>::from_data(TensorData::new(mask_data, [n, 1, m, m]), device);
    let (logits1, iou1) = decode(sam, &features, (coords.clone(), labels.clone()), mask_prompt, &has_mask, device);
    let first = promptable_loss(logits1.clone(), iou1, gt.clone());

    // Round 2: a correction click from the error region of round 1 (on the low-res grid), the
    // previous logits as the mask prompt.
    let low: Vec<f32> = logits1.clone().into_data().convert::<f32>().to_vec().map_err(|e| format!("{e:?}"))?;
    let cell = size / m;
    for (i, o) in objects.iter().enumerate() {
        let pred = &low[i * m * m..(i + 1) * m * m];
        let truth = |p: usize| {
            let (y, x) = (p / m * cell + cell / 2, p % m * cell + cell / 2);
            o.mask[y * size + x] != 0
        };
        let wrong = |p: usize| (pred[p] > 0.0) != truth(p);
        if let Some((x, y)) = draw_pixel(m, m * m, wrong, rng) {
            let p = y as usize * m + x as usize;
            coords[(i * SLOTS + 2) * 2] = x * cell as f32 + cell as f32 / 2.0;
            coords[(i * SLOTS + 2) * 2 + 1] = y * cell as f32 + cell as f32 / 2.0;
            labels[i * SLOTS + 2] = i64::from(truth(p));
        }
    }
    let (logits2, iou2) = decode(sam, &features, (coords, labels), logits1.detach(), &vec![true; n], device);
    let second = promptable_loss(logits2, iou2, gt);

    let half = |a: Tensor<B, 1>, b: Tensor<B, 1>| (a + b).mul_scalar(0.5);
    let total = half(first.total, second.total);
    Ok(StageLoss {
        total,
        terms: vec![
            ("focal", half(first.focal, second.focal)),
            ("dice", half(first.dice, second.dice)),
            ("iou", half(first.iou, second.iou)),
        ],
    })
}

/// Held-out check of stage 2: mean mask IoU (at the model's side) from one box and from one
/// point (drawn at the object's most interior pixel), over every object of `samples`.
pub fn prompt_iou<B: Backend>(sam: &Sam2<B>, samples: &[StreamSample], device: &B::Device) -> Result<(f64, f64), String> {
    let (mut box_sum, mut point_sum, mut count) = (0.0, 0.0, 0usize);
    for s in samples {
        let n = s.scene.objects.len();
        if n == 0 {
            continue;
        }
        let size = s.scene.width;
        let m = 4 * sam.sam_prompt_encoder.image_embedding_size[0];
        let features = sam.encode_image(sam_pixels(scenes_x01::<B>(std::slice::from_ref(s), device)));
        let features = features_for_rows(&features, &vec![0; n], device);
        let gt = masks::<B>(&s.scene.objects.iter().map(|o| o.mask.as_slice()).collect::<Vec<_>>(), size, device);
        let none = Tensor::<B, 4>::zeros([n, 1, m, m], device);
        let mut box_pts = (vec![0f32; n * SLOTS * 2], vec![-1i64; n * SLOTS]);
        let mut point_pts = box_pts.clone();
        for (i, o) in s.scene.objects.iter().enumerate() {
            let [x0, y0, x1, y1] = o.bbox;
            box_pts.0[i * SLOTS * 2..i * SLOTS * 2 + 4].copy_from_slice(&[x0, y0, x1 - 1.0, y1 - 1.0]);
            box_pts.1[i * SLOTS] = 2;
            box_pts.1[i * SLOTS + 1] = 3;
            let (x, y) = interior_point(o, size);
            point_pts.0[i * SLOTS * 2..i * SLOTS * 2 + 2].copy_from_slice(&[x, y]);
            point_pts.1[i * SLOTS] = 1;
        }
        for (pts, sum) in [(box_pts, &mut box_sum), (point_pts, &mut point_sum)] {
            let (logits, _) = decode(sam, &features, pts, none.clone(), &vec![false; n], device);
            let z = crate::loss::bce_dice::upsample_logits(logits, [size, size]);
            let iou: Vec<f32> = crate::loss::promptable::mask_iou(z, gt.clone()).into_data().convert::<f32>().to_vec().map_err(|e| format!("{e:?}"))?;
            *sum += iou.iter().map(|&v| v as f64).sum::<f64>();
        }
        count += n;
    }
    let c = count.max(1) as f64;
    Ok((box_sum / c, point_sum / c))
}

/// The mask pixel farthest from the mask's border (a deterministic "click in the middle").
fn interior_point(o: &SceneObject, size: usize) -> (f32, f32) {
    // Chessboard distance transform in two passes.
    let mut d: Vec<u32> = o.mask.iter().map(|&v| if v != 0 { u32::MAX / 2 } else { 0 }).collect();
    for y in 0..size {
        for x in 0..size {
            let p = y * size + x;
            if d[p] == 0 {
                continue;
            }
            let mut best = d[p];
            for (dy, dx) in [(-1i64, -1i64), (-1, 0), (-1, 1), (0, -1)] {
                let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                let v = if yy < 0 || xx < 0 || xx >= size as i64 { 0 } else { d[yy as usize * size + xx as usize] };
                best = best.min(v + 1);
            }
            d[p] = best;
        }
    }
    for y in (0..size).rev() {
        for x in (0..size).rev() {
            let p = y * size + x;
            if d[p] == 0 {
                continue;
            }
            let mut best = d[p];
            for (dy, dx) in [(1i64, 1i64), (1, 0), (1, -1), (0, 1)] {
                let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                let v = if yy >= size as i64 || xx < 0 || xx >= size as i64 { 0 } else { d[yy as usize * size + xx as usize] };
                best = best.min(v + 1);
            }
            d[p] = best;
        }
    }
    let p = (0..d.len()).max_by_key(|&p| d[p]).unwrap_or(0);
    ((p % size) as f32, (p / size) as f32)
}
