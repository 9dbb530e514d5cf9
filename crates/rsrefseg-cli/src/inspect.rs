//! `rsrefseg inspect`: one image and one sentence through the model, every named intermediate
//! written to a safetensors file (for comparison with the reference implementation's dumps).

use crate::model_files::{self, ModelArgs, TextArgs};
use crate::pipeline;
use anyhow::{Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::path::PathBuf;

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

    let run = pipeline::run(&model, config.image_size(), &img, &tokens, &device);
    let mut entries: Vec<(String, Entry)> = Vec::new();
    let l = tokens.ids.len();
    entries.push(("input_ids".into(), Entry::I64(vec![1, l], tokens.ids.clone())));
    entries.push(("attention_mask".into(), Entry::I64(vec![1, l], tokens.mask.clone())));
    entries.push(("image_rgb_u8".into(), Entry::U8(vec![img.height, img.width, 3], img.data.clone())));
    let g = run.geometry;
    let hw = |(h, w): (usize, usize)| vec![h as i64, w as i64];
    entries.push(("meta_ori_hw".into(), Entry::I64(vec![2], hw(g.original))));
    entries.push(("meta_img_hw".into(), Entry::I64(vec![2], hw(g.resized))));
    entries.push(("meta_pad_hw".into(), Entry::I64(vec![2], hw((g.padded, g.padded)))));
    for (name, t) in pipeline::intermediates(&model, &run).0 {
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
    let metadata = std::collections::HashMap::from([("timings_ms".to_string(), serde_json::to_string(&run.timings)?)]);
    safetensors::serialize_to_file(views, &Some(metadata), &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote {} tensors to {}", entries.len(), args.out.display());
    Ok(())
}
