//! Model bundles (`.rsb`, the model crate's [`rsrefseg::export`] format: configuration, tokenizer
//! and block-quantised weights in one file) turned into a model on a backend.
//!
//! [`load_bundle`] is the only place of the web crate that reads the file format.

use burn::tensor::backend::Backend;
use rsrefseg::checkpoint::TensorMap;
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::encoders::tokenizer::TextTokenizer;
use rsrefseg::export::{write_bundle, Bundle, BundleTensors, ExportOptions};
use rsrefseg::model::RsRefSeg;
use std::collections::BTreeSet;

/// Largest bundle accepted (the nano bundle is a few MB; the browser preset's q8 bundle about
/// 560 MB).
pub const MAX_BUNDLE_BYTES: usize = 1 << 30;

/// Maps tokenizer ids to the rows of a bundle's (pruned) token table.
pub type IdMap = Box<dyn Fn(&[u32]) -> Vec<u32>>;

/// A model ready to run: its configuration, tokenizer and weights on a backend.
pub struct LoadedModel<B: Backend> {
    pub config: RsRefSegConfig,
    pub tokenizer: TextTokenizer,
    pub model: RsRefSeg<B>,
    /// Tokenizer ids → stored token rows, for bundles whose vocabulary was pruned.
    pub id_map: Option<IdMap>,
    /// One line describing the bundle (parameters, storage, size).
    pub summary: String,
}

/// Bundle bytes → model on `device`. Errors name the problem (not a bundle, damaged, a bad
/// configuration or tokenizer, weights that do not fit the configuration).
pub fn load_bundle<B: Backend>(bytes: Vec<u8>, device: &B::Device) -> Result<LoadedModel<B>, String> {
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
    let model = bundle.load_model::<B>(device).map_err(|e| e.to_string())?;
    let s = bundle.summary();
    let storage: Vec<String> = s.by_dtype.iter().map(|g| format!("{} {}", g.dtype.name(), g.tensors)).collect();
    let summary = format!(
        "{:.2} M parameters, {:.1} MB bundle ({} tensors: {}), input {}²",
        s.values as f64 / 1e6,
        s.file_bytes as f64 / 1e6,
        s.tensors,
        storage.join(", "),
        config.image_size()
    );
    let id_map: Option<IdMap> = match bundle.vocab() {
        Some(_) => Some(Box::new(move |ids: &[u32]| bundle.map_ids(ids).ids)),
        None => None,
    };
    Ok(LoadedModel { config, tokenizer, model, id_map, summary })
}

/// Write a bundle of `tensors` (canonical names; `linear` lists the `Linear` weights, which are
/// block-quantised with the default options: q8, blocks of 32).
pub fn bundle_bytes(config: &RsRefSegConfig, tokenizer_json: &str, tensors: TensorMap, linear: BTreeSet<String>) -> Result<Vec<u8>, String> {
    let tensors = BundleTensors { tensors, linear_weights: linear };
    write_bundle(config, tokenizer_json, &tensors, &ExportOptions::default()).map_err(|e| e.to_string())
}

impl<B: Backend> LoadedModel<B> {
    /// The model as a [`crate::pipeline::Segmenter`] on `device`.
    pub fn segmenter(self, device: B::Device) -> crate::pipeline::Segmenter<B> {
        crate::pipeline::Segmenter {
            image_size: self.config.image_size(),
            model: self.model,
            tokenizer: self.tokenizer,
            id_map: self.id_map,
            device,
        }
    }
}
