//! One image and one sentence through the model, keeping every named intermediate and the time
//! each part took (shared by `inspect` and `segment`).

use crate::model_files::Tokens;
use burn::tensor::backend::Backend;
use burn::tensor::{activation::sigmoid, Tensor};
use rsrefseg::host::HostTensor;
use rsrefseg::model::{ImageEncoding, RsRefSeg, RsRefSegOutput};
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::pre::{clip_pixels, sam_pixels, to_x01, Geometry, RgbImage};
use serde::Serialize;
use std::time::Instant;

/// Milliseconds per part of a run.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub encode_image_ms: f64,
    pub query_ms: f64,
    pub postprocess_ms: f64,
}

pub struct Run<B: Backend> {
    pub geometry: Geometry,
    pub x01: Tensor<B, 4>,
    pub image: ImageEncoding<B>,
    pub out: RsRefSegOutput<B>,
    /// Selected mask logits at the original image size `[1, 1, H0, W0]`.
    pub logits: Tensor<B, 4>,
    pub timings: Timings,
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

pub fn run<B: Backend>(model: &RsRefSeg<B>, image_size: usize, img: &RgbImage, tokens: &Tokens, device: &B::Device) -> Run<B> {
    let mut timings = Timings::default();
    let t = Instant::now();
    let (x01, geometry) = to_x01::<B>(img, image_size, device);
    timings.preprocess_ms = ms(t);

    let t = Instant::now();
    let image = model.encode_image(x01.clone());
    timings.encode_image_ms = ms(t);

    let t = Instant::now();
    let (ids, mask) = tokens.tensors::<B>(device);
    let out = model.query(&image, ids, Some(mask), false);
    timings.query_ms = ms(t);

    let t = Instant::now();
    let logits = logits_at_original_size(out.mask_logits.clone(), geometry);
    timings.postprocess_ms = ms(t);
    Run { geometry, x01, image, out, logits, timings }
}

/// Named host tensors, in insertion order.
#[derive(Default)]
pub struct Collector(pub Vec<(String, HostTensor)>);

impl Collector {
    fn put<B: Backend, const D: usize>(&mut self, name: impl Into<String>, t: Tensor<B, D>) {
        self.0.push((name.into(), HostTensor::from_tensor(t)));
    }
}

/// Every intermediate by name, with its own shape, in the names of the reference fixture
/// (`full_io.safetensors`) where it has them.
pub fn intermediates<B: Backend>(model: &RsRefSeg<B>, run: &Run<B>) -> Collector {
    let mut c = Collector::default();

    // Pre-processing
    c.put("input_x01", run.x01.clone());
    c.put("sam_pixel_values", sam_pixels(run.x01.clone()));
    c.put("clip_pixel_values", clip_pixels(run.x01.clone(), model.clip_size));

    // Encoders
    c.put("v", run.image.v.clone());
    c.put("t_word", run.out.text.t_word.clone());
    c.put("t_sent", run.out.text.t_sent.clone());
    let sam = &run.image.sam;
    for (i, t) in sam.backbone.trunk.iter().enumerate() {
        c.put(format!("sam_trunk_out{i}"), t.clone());
    }
    for (i, t) in sam.backbone.fpn.iter().enumerate() {
        let name = match i {
            0 => "sam_fpn0_pre_conv_s0".to_string(),
            1 => "sam_fpn1_pre_conv_s1".to_string(),
            _ => format!("sam_fpn{i}"),
        };
        c.put(name, t.clone());
    }
    if let Some(h) = &sam.high_res {
        c.put("sam_feat_s0", h.feat_s0.clone());
        c.put("sam_feat_s1", h.feat_s1.clone());
    }
    c.put("sam_image_embed", sam.image_embed.clone());
    c.put("sam_image_pe", model.sam.image_pe());

    // Prompter
    let p = &run.out.prompter;
    c.put("prompter_query_init", p.query_init.clone());
    c.put("prompter_t1", p.t1.clone());
    c.put("prompter_t2", p.t2.clone());
    c.put("prompter_first_order_tokens", p.first_order_tokens.clone());
    c.put("prompter_refined_img_feat_map", p.refined.clone());
    c.put("prompter_sparse_prompts", p.sparse.clone());
    if let Some(d) = &p.dense {
        c.put("prompter_dense_prompts", d.clone());
    }
    c.put("sam_dense_embed", run.out.dense_embedding.clone());

    // Mask decoder
    let dec = &run.out.decoder;
    let [b, _, h, w] = dec.all.masks.dims();
    c.put("dec_all_masks", dec.all.masks.clone());
    c.put("dec_all_iou", dec.all.iou_pred.clone());
    c.put("dec_obj_score_logits", dec.all.object_score_logits.clone());
    let token0 = dec.all.masks.clone().slice([0..b, 0..1, 0..h, 0..w]);
    c.put("dec_mask_token0", token0.clone());
    c.put("dec_stability_token0", model.sam.sam_mask_decoder.stability_scores(token0));
    c.put("dec_selected_mask", run.out.mask_logits.clone());
    c.put("dec_selected_iou", run.out.iou.clone());

    // Post-processing: logits at the original size, probability, binary mask `[1, H0, W0]`.
    let [_, _, h0, w0] = run.logits.dims();
    c.put("final_logits", run.logits.clone());
    c.put("final_prob", sigmoid(run.logits.clone()).reshape([b, h0, w0]));
    c.put("final_mask", binary_mask(run.logits.clone()).float().reshape([b, h0, w0]));
    c
}
