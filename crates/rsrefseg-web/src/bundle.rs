//! Model bundles (`.rsb`, the model crate's [`rsrefseg::export`] format: configuration, tokenizer
//! and block-quantised weights in one file) turned into a model on a backend.
//!
//! [`load_bundle`] is the only place of the web crate that reads the file format.

use burn::tensor::backend::Backend;
use rsrefseg::checkpoint::TensorMap;
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::encoders::tokenizer::TextTokenizer;
use rsrefseg::export::{write_bundle, Bundle, BundleTensors, ExportOptions, TokenTablePlacement};
use rsrefseg::model::RsRefSeg;
use std::collections::BTreeSet;
use rsrefseg::segmenter::{Segmenter, TokenLookup};
use std::rc::Rc;

/// Largest bundle accepted (the nano bundle is a few MB; the browser preset's q8 bundle about
/// 560 MB).
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;

/// A model ready to run: its configuration, tokenizer and weights on a backend.
pub struct LoadedModel<B: Backend> {
    pub config: RsRefSegConfig,
    pub tokenizer: TextTokenizer,
    pub model: RsRefSeg<B>,
    /// How token ids reach the token table.
    pub tokens: TokenLookup,
    /// One line describing the bundle (parameters, storage, size).
    pub summary: String,
}

/// Bundle bytes → model on `device`, the token table on the host ([`TokenTablePlacement::Host`]:
/// SigLIP2's 256 000 × 768 table is 786 MB in f32, far over WebGPU's default 128 MiB
/// storage-buffer binding, while a sentence needs a few dozen rows; every bundle, the nano one
/// too, takes that path, so it is the one the browser tests exercise). Errors
/// name the problem (not a bundle, damaged, a bad configuration or tokenizer, weights that do not
/// fit the configuration).
pub fn load_bundle<B: Backend>(bytes: Vec<u8>, device: &B::Device) -> Result<LoadedModel<B>, String> {
    load_bundle_with(bytes, device, None)
}

/// [`load_bundle`] with the token table's placement chosen by the caller (`None`: on the host).
pub fn load_bundle_with<B: Backend>(
    bytes: Vec<u8>,
    device: &B::Device,
    placement: Option<TokenTablePlacement>,
) -> Result<LoadedModel<B>, String> {
    if bytes.is_empty() {
        return Err("the model file is empty".into());
    }
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(format!("the model file is {} MB; the largest accepted is {} MB", bytes.len() >> 20, MAX_BUNDLE_BYTES >> 20));
    }
    let bundle = Bundle::from_bytes(bytes).map_err(|e| e.to_string())?;
    let config = bundle.config().clone();
    let tokenizer = TextTokenizer::from_bytes(bundle.tokenizer_json().as_bytes(), config.tokenizer.clone())
        .map_err(|e| format!("the bundle's tokenizer: {e}"))?;
    let placement = placement.unwrap_or(TokenTablePlacement::Host);
    let model = bundle.load_model_with::<B>(device, placement).map_err(|e| e.to_string())?;
    let s = bundle.summary();
    let storage: Vec<String> = s.by_dtype.iter().map(|g| format!("{} {}", g.dtype.name(), g.tensors)).collect();
    let summary = format!(
        "{:.2} M parameters, {:.1} MB bundle ({} tensors: {}), input {}²{}",
        s.values as f64 / 1e6,
        s.file_bytes as f64 / 1e6,
        s.tensors,
        storage.join(", "),
        config.image_size(),
        if placement == TokenTablePlacement::Host { ", token table on the host" } else { "" }
    );
    let tokens = match (placement, bundle.vocab().is_some()) {
        (TokenTablePlacement::Host, _) => TokenLookup::Host(Rc::new(bundle)),
        (TokenTablePlacement::Device, true) => TokenLookup::Pruned(Rc::new(bundle)),
        (TokenTablePlacement::Device, false) => TokenLookup::Direct,
    };
    Ok(LoadedModel { config, tokenizer, model, tokens, summary })
}

/// Write a bundle of `tensors` (canonical names; `linear` lists the `Linear` weights, which are
/// block-quantised with the default options: q8, blocks of 32).
pub fn bundle_bytes(config: &RsRefSegConfig, tokenizer_json: &str, tensors: TensorMap, linear: BTreeSet<String>) -> Result<Vec<u8>, String> {
    let tensors = BundleTensors { tensors, linear_weights: linear };
    write_bundle(config, tokenizer_json, &tensors, &ExportOptions::default()).map_err(|e| e.to_string())
}

impl<B: Backend> LoadedModel<B> {
    /// The model as a [`Segmenter`] on `device`.
    pub fn segmenter(self, device: B::Device) -> Segmenter<B> {
        Segmenter {
            image_size: self.config.image_size(),
            model: self.model,
            tokenizer: Some(self.tokenizer),
            tokens: self.tokens,
            device,
        }
    }
}
