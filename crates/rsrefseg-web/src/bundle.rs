//! Model bundles: one file with the configuration, the tokenizer and the weights, turned into a
//! model on a backend.
//!
//! [`load_bundle`] is the only place that knows the file format. Until the model crate's bundle
//! format (`rsrefseg::export`) is available it reads a development format: a safetensors file of
//! canonical parameter names whose `__metadata__` holds `"format": "rsrefseg-dev-bundle"`, the
//! model configuration (`"config"`) and the `tokenizer.json` text (`"tokenizer"`), written by
//! [`dev_bundle_bytes`].

use burn::tensor::backend::Backend;
use rsrefseg::checkpoint::{read_tensors_from_bytes, LoadOptions, TensorMap};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::encoders::tokenizer::TextTokenizer;
use rsrefseg::model::{load_rsrefseg_tensors, RsRefSeg};
use std::collections::HashMap;

/// Largest bundle accepted (the nano bundle is a few MB; the browser preset's f32 weights are
/// well below this).
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;

const DEV_FORMAT: &str = "rsrefseg-dev-bundle";

/// A model ready to run: its configuration, tokenizer and weights on a backend.
pub struct LoadedModel<B: Backend> {
    pub config: RsRefSegConfig,
    pub tokenizer: TextTokenizer,
    pub model: RsRefSeg<B>,
    /// One line describing the bundle (format, parameters, size).
    pub summary: String,
}

/// Bundle bytes → model on `device`. Errors name the problem (not a bundle, a bad configuration,
/// weights that do not fit the configuration, a bad tokenizer).
pub fn load_bundle<B: Backend>(bytes: Vec<u8>, device: &B::Device) -> Result<LoadedModel<B>, String> {
    if bytes.is_empty() {
        return Err("the model file is empty".into());
    }
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(format!("the model file is {} MB; the largest accepted is {} MB", bytes.len() >> 20, MAX_BUNDLE_BYTES >> 20));
    }
    let size = bytes.len();
    let (config, tokenizer_json, tensors) = read_dev_bundle(&bytes)?;
    let tokenizer = TextTokenizer::from_bytes(tokenizer_json.as_bytes(), config.tokenizer.clone())
        .map_err(|e| format!("the bundle's tokenizer: {e}"))?;
    let params: usize = tensors.values().map(|t| t.numel()).sum();
    let (model, _) = load_rsrefseg_tensors::<B>(tensors, &config, device, LoadOptions::default())
        .map_err(|e| format!("the bundle's weights: {e}"))?;
    let summary = format!(
        "{DEV_FORMAT}: {:.2} M parameters (f32), {:.1} MB, input {}²",
        params as f64 / 1e6,
        size as f64 / 1e6,
        config.image_size()
    );
    Ok(LoadedModel { config, tokenizer, model, summary })
}

fn read_dev_bundle(bytes: &[u8]) -> Result<(RsRefSegConfig, String, TensorMap), String> {
    let not_bundle = || "not an rsrefseg model bundle (expected a .rsb file)".to_string();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).map_err(|_| not_bundle())?;
    let info = metadata.metadata().as_ref().ok_or_else(not_bundle)?;
    if info.get("format").map(String::as_str) != Some(DEV_FORMAT) {
        return Err(not_bundle());
    }
    let config = RsRefSegConfig::from_json(info.get("config").ok_or("the bundle has no model configuration")?)?;
    let tokenizer = info.get("tokenizer").ok_or("the bundle has no tokenizer")?.clone();
    let tensors = read_tensors_from_bytes(bytes, "model bundle").map_err(|e| e.to_string())?;
    Ok((config, tokenizer, tensors))
}

/// Write the development bundle format (see the module documentation).
pub fn dev_bundle_bytes(config: &RsRefSegConfig, tokenizer_json: &str, tensors: &TensorMap) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes.iter().map(|(k, shape, data)| {
        (k.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data).expect("tensor view"))
    });
    let info = HashMap::from([
        ("format".to_string(), DEV_FORMAT.to_string()),
        ("config".to_string(), config.to_json()),
        ("tokenizer".to_string(), tokenizer_json.to_string()),
    ]);
    safetensors::serialize(views, &Some(info)).expect("serialising a bundle")
}

impl<B: Backend> LoadedModel<B> {
    /// The model as a [`crate::pipeline::Segmenter`] on `device`.
    pub fn segmenter(self, device: B::Device) -> crate::pipeline::Segmenter<B> {
        crate::pipeline::Segmenter {
            image_size: self.config.image_size(),
            model: self.model,
            tokenizer: self.tokenizer,
            device,
        }
    }
}
