//! `rsrefseg inspect`: one image and one sentence through the model, every named intermediate
//! written to a safetensors file (for comparison with the reference implementation's dumps).

use crate::model_files::{self, ModelArgs, TextArgs};
use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{activation::sigmoid, Tensor};
use rsrefseg::host::HostTensor;
use rsrefseg::model::{RsRefSeg, RsRefSegOutput};
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::pre::{clip_pixels, sam_pixels, to_x01};
use rsrefseg::segmenter::{block_on, EncodedImage, Segmenter};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input image (PNG, JPEG, TIFF, BMP or WebP).
    #[arg(long)]
    pub image: PathBuf,
    #[command(flatten)]
    pub text: TextArgs,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

/// One tensor to write, in the dtype the reference dumps use for it.
enum Entry {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
    U8(Vec<usize>, Vec<u8>),
}

/// A tensor in safetensors' terms: dtype, shape, bytes.
struct Encoded(Dtype, Vec<usize>, Vec<u8>);

impl Entry {
    /// Dtype, shape and little-endian bytes.
    fn encode(&self) -> Encoded {
        match self {
            Entry::F32(s, d) => Encoded(Dtype::F32, s.clone(), d.iter().flat_map(|v| v.to_le_bytes()).collect()),
            Entry::I64(s, d) => Encoded(Dtype::I64, s.clone(), d.iter().flat_map(|v| v.to_le_bytes()).collect()),
            Entry::U8(s, d) => Encoded(Dtype::U8, s.clone(), d.clone()),
        }
    }
}

pub fn run(args: InspectArgs) -> Result<()> {
    type B = crate::backend::CpuBackend;
    let device = Default::default();
    let img = model_files::read_image(&args.image)?;
    let config = model_files::load_config(&args.model)?;
    let tokens = model_files::tokens(&args.text, &args.model, &config)?;
    let model = model_files::load_model::<B>(&args.model, &config, &device)?;

    // The segmentation pipeline's own steps (rsrefseg::segmenter), keeping every output.
    let segmenter = Segmenter::new(model, None, config.image_size(), device);
    let image = block_on(segmenter.encode(&img, 0.0)).map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let (out, _) = segmenter.query(&image, &tokens.sentence());
    let query_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let logits = logits_at_original_size(out.mask_logits.clone(), image.geometry);
    let postprocess_ms = t.elapsed().as_secs_f64() * 1e3;
    let (x01, _) = to_x01::<B>(&img, config.image_size(), &segmenter.device);
    let timings = json!({
        "preprocess_ms": image.timings.preprocess,
        "encode_image_ms": image.timings.encode,
        "query_ms": query_ms,
        "postprocess_ms": postprocess_ms,
    });
    let run = Run { x01, image, out, logits };
    let mut entries: Vec<(String, Entry)> = Vec::new();
    let l = tokens.ids.len();
    entries.push(("input_ids".into(), Entry::I64(vec![1, l], tokens.ids.clone())));
    entries.push(("attention_mask".into(), Entry::I64(vec![1, l], tokens.mask.clone())));
    entries.push(("image_rgb_u8".into(), Entry::U8(vec![img.height, img.width, 3], img.data.clone())));
    let g = run.image.geometry;
    let hw = |(h, w): (usize, usize)| vec![h as i64, w as i64];
    entries.push(("meta_ori_hw".into(), Entry::I64(vec![2], hw(g.original))));
    entries.push(("meta_img_hw".into(), Entry::I64(vec![2], hw(g.resized))));
    entries.push(("meta_pad_hw".into(), Entry::I64(vec![2], hw((g.padded, g.padded)))));
    for (name, t) in intermediates(&segmenter.model, &run).0 {
        let entry = if name == "final_mask" {
            Entry::U8(t.shape.clone(), t.data.iter().map(|&v| v as u8).collect())
        } else {
            Entry::F32(t.shape.clone(), t.data.clone())
        };
        entries.push((name, entry));
    }

    let encoded: Vec<(String, Encoded)> = entries.iter().map(|(n, e)| (n.clone(), e.encode())).collect();
    let views = encoded
        .iter()
        .map(|(n, Encoded(dtype, shape, bytes))| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (n.clone(), v)).map_err(|e| anyhow::anyhow!("{n}: {e:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = std::collections::HashMap::from([("timings_ms".to_string(), timings.to_string())]);
    safetensors::serialize_to_file(views, &Some(metadata), &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote {} tensors to {}", entries.len(), args.out.display());
    Ok(())
}

/// What one run produced: the input tensor, the encoded image, the model's output and the
/// logits at the original size.
struct Run<B: Backend> {
    x01: Tensor<B, 4>,
    image: EncodedImage<B>,
    out: RsRefSegOutput<B>,
    logits: Tensor<B, 4>,
}

/// Named host tensors, in insertion order.
#[derive(Default)]
struct Collector(Vec<(String, HostTensor)>);

impl Collector {
    fn put<B: Backend, const D: usize>(&mut self, name: impl Into<String>, t: Tensor<B, D>) {
        self.0.push((name.into(), HostTensor::from_tensor(t)));
    }
}

/// Every intermediate by name, with its own shape, in the names of the reference fixture
/// (`full_io.safetensors`) where it has them.
fn intermediates<B: Backend>(model: &RsRefSeg<B>, run: &Run<B>) -> Collector {
    let mut c = Collector::default();

    // Pre-processing
    c.put("input_x01", run.x01.clone());
    c.put("sam_pixel_values", sam_pixels(run.x01.clone()));
    c.put("clip_pixel_values", clip_pixels(run.x01.clone(), model.clip_size));

    // Encoders
    c.put("v", run.image.encoding.v.clone());
    c.put("t_word", run.out.text.t_word.clone());
    c.put("t_sent", run.out.text.t_sent.clone());
    let sam = &run.image.encoding.sam;
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
