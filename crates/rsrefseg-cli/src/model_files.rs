//! Model, tokenizer and input files named on the command line.
//!
//! A model is a configuration (the JSON form of [`RsRefSegConfig`]) plus weights: either one
//! full-model file (the released RSRefSeg 2 state dict or this crate's own names), or the three
//! parts separately (a Hugging Face SigLIP `model.safetensors`, a SAM 2.1 checkpoint in the
//! original or HF layout, and a prompter state dict).

use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rsrefseg::checkpoint::keys::{prompter as prompter_keys, section, siglip_hf};
use rsrefseg::checkpoint::{load_module_owned, read_tensors, LoadOptions};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::encoders::{Siglip, TextTokenizer};
use rsrefseg::model::{load_rsrefseg_tensors, RsRefSeg};
use rsrefseg::pre::RgbImage;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model configuration: a preset name (paper, browser, reference-dev, nano) or a model.json
    /// (`rsrefseg config --preset browser` prints one). Without --config and weights, the
    /// embedded `nano` model runs.
    #[arg(long)]
    pub config: Option<String>,
    /// Full-model weights (released RSRefSeg 2 state dict or native names; safetensors or .pt).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// SigLIP weights (Hugging Face `SiglipModel` safetensors), with --sam-weights and
    /// --prompter-weights instead of --weights.
    #[arg(long, conflicts_with = "weights", requires_all = ["sam_weights", "prompter_weights"])]
    pub siglip_weights: Option<PathBuf>,
    /// SAM 2.1 weights (original `.pt` / safetensors or HF `Sam2Model` layout).
    #[arg(long, conflicts_with = "weights", requires_all = ["siglip_weights", "prompter_weights"])]
    pub sam_weights: Option<PathBuf>,
    /// Cascaded-prompter state dict (keys with or without the `prompter.` prefix).
    #[arg(long, conflicts_with = "weights", requires_all = ["siglip_weights", "sam_weights"])]
    pub prompter_weights: Option<PathBuf>,
    /// `tokenizer.json` of the SigLIP checkpoint (default: `tokenizer.json` next to the config).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

impl ModelArgs {
    /// No configuration and no weights named: the model embedded in the binary (`nano`).
    pub fn uses_embedded(&self) -> bool {
        self.config.is_none() && self.weights.is_none() && self.siglip_weights.is_none()
    }
}

/// The shipped `nano` model (trained on the synthetic benchmark by `tools/train-nano.sh`),
/// built into the binary so that `rsrefseg segment` works with no files and no network.
pub mod embedded {
    pub const NANO_WEIGHTS: &[u8] = include_bytes!("../../../models/nano/nano.safetensors");
    pub const NANO_TOKENIZER: &[u8] = include_bytes!("../../../models/nano/tokenizer.json");
}

#[derive(clap::Args, Debug, Clone)]
pub struct TextArgs {
    /// The referring expression ("the white ship left of the pier").
    #[arg(long, conflicts_with = "token_ids", required_unless_present = "token_ids")]
    pub text: Option<String>,
    /// Token ids instead of text (comma-separated), e.g. from another tokenizer.
    #[arg(long, value_delimiter = ',')]
    pub token_ids: Option<Vec<i64>>,
}

/// Read and check the model configuration.
pub fn load_config(args: &ModelArgs) -> Result<RsRefSegConfig> {
    let Some(spec) = &args.config else {
        if args.uses_embedded() {
            return Ok(RsRefSegConfig::nano());
        }
        bail!(
            "weights were given without their configuration: pass --config model.json (`rsrefseg config \
             --preset browser` prints the browser configuration)"
        );
    };
    crate::eval_cmd::resolve_config(spec)
}

/// Build the model from the weights named in `args` (strict: every parameter filled, every
/// tensor used or deliberately ignored).
pub fn load_model<B: Backend>(args: &ModelArgs, config: &RsRefSegConfig, device: &B::Device) -> Result<RsRefSeg<B>> {
    let model = load_model_unchecked(args, config, device)?;
    // NaN or infinite weights would give an empty mask and a null IoU without a word.
    if let Some(name) = rsrefseg::checkpoint::first_non_finite(&model) {
        bail!("the weights are damaged: parameter {name} holds NaN or infinite values (a corrupt file, or a training run that diverged)");
    }
    Ok(model)
}

fn load_model_unchecked<B: Backend>(args: &ModelArgs, config: &RsRefSegConfig, device: &B::Device) -> Result<RsRefSeg<B>> {
    let options = LoadOptions::default();
    let read = |p: &Path| read_tensors(p).map_err(|e| anyhow!("{e}"));
    if args.uses_embedded() {
        let tensors = rsrefseg::checkpoint::safetensors_file::read(embedded::NANO_WEIGHTS, "embedded nano.safetensors")
            .map_err(|e| anyhow!("the embedded nano model: {e}"))?;
        let (model, _) = load_rsrefseg_tensors::<B>(tensors, config, device, options)
            .map_err(|e| anyhow!("the embedded nano model: {e}"))?;
        return Ok(model);
    }
    if let Some(path) = &args.weights {
        let (model, _) = load_rsrefseg_tensors::<B>(read(path)?, config, device, options)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        return Ok(model);
    }
    let (Some(siglip_path), Some(sam_path), Some(prompter_path)) =
        (&args.siglip_weights, &args.sam_weights, &args.prompter_weights)
    else {
        bail!(
            "no weights given and no default model is embedded yet: pass --weights FILE (full model) or \
             --siglip-weights, --sam-weights and --prompter-weights"
        );
    };
    let mut model = config.init::<B>(device).map_err(anyhow::Error::msg)?;

    let (tensors, _) = siglip_hf::TABLE.apply(read(siglip_path)?).map_err(|e| anyhow!("{e}"))?;
    let siglip = Siglip::new(&config.siglip, device).map_err(anyhow::Error::msg)?;
    model.siglip = load_module_owned(siglip, tensors, device, options, siglip_hf::TABLE.format)
        .map_err(|e| anyhow!("{}: {e}", siglip_path.display()))?
        .0;

    model.sam = rsrefseg::sam::load_sam2_tensors(read(sam_path)?, &config.sam, device, options)
        .map_err(|e| anyhow!("{}: {e}", sam_path.display()))?
        .0;

    let mut tensors = read(prompter_path)?;
    if tensors.keys().all(|k| k.starts_with("prompter.")) {
        tensors = section(&tensors, "prompter.");
    }
    let (tensors, _) = prompter_keys::TABLE.apply(tensors).map_err(|e| anyhow!("{e}"))?;
    model.prompter = load_module_owned(config.prompter.init::<B>(device), tensors, device, options, prompter_keys::TABLE.format)
        .map_err(|e| anyhow!("{}: {e}", prompter_path.display()))?
        .0;
    Ok(model)
}

/// Decode an image file, naming the file in every error.
pub fn read_image(path: &Path) -> Result<RgbImage> {
    use rsrefseg::segmenter::{decode_image, MAX_FILE_BYTES};
    let bytes = read_image_file(path, MAX_FILE_BYTES, "image")?;
    decode_image(&bytes).map_err(|e| anyhow!("the image {}: {e}", path.display()))
}

/// The bytes of an image file, its size checked before it is read (the pipeline's limits:
/// `max` bytes, `what` names them: "image", "scene").
pub fn read_image_file(path: &Path, max: usize, what: &str) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).with_context(|| format!("cannot read the image {}", path.display()))?.len();
    if len > max as u64 {
        bail!("the image {} is {:.1} MB; the largest accepted {what} file is {} MB", path.display(), len as f64 / (1024.0 * 1024.0), max >> 20);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the image {}", path.display()))?;
    if bytes.is_empty() {
        bail!("the image {} is an empty file", path.display());
    }
    Ok(bytes)
}

/// Token ids and attention mask `[1, l]` of one sentence, checked against the text tower.
pub struct Tokens {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    /// Words of the sentence the vocabulary does not know (a warning for the user), if any.
    pub note: Option<String>,
}

impl Tokens {
    /// The sentence as the segmentation pipeline takes it (ids were checked to be in the
    /// vocabulary, so they fit u32).
    pub fn sentence(&self) -> rsrefseg::segmenter::Sentence {
        rsrefseg::segmenter::Sentence {
            ids: self.ids.iter().map(|&i| i as u32).collect(),
            attention_mask: self.mask.iter().map(|&m| m as u32).collect(),
            note: self.note.clone(),
        }
    }

    pub fn tensors<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let l = self.ids.len();
        (
            Tensor::from_data(TensorData::new(self.ids.clone(), [1, l]), device),
            Tensor::from_data(TensorData::new(self.mask.clone(), [1, l]), device),
        )
    }
}

/// Tokenise `--text` (with the configuration's tokenizer policy) or take `--token-ids`.
pub fn tokens(text: &TextArgs, model: &ModelArgs, config: &RsRefSegConfig) -> Result<Tokens> {
    let tc = &config.siglip.text_config;
    let mut note = None;
    let (ids, mask) = match (&text.text, &text.token_ids) {
        (_, Some(ids)) => (ids.clone(), vec![1; ids.len()]),
        (Some(sentence), None) => {
            let path = match (&model.tokenizer, &model.config) {
                (Some(p), _) => p.clone(),
                // The nano preset's tokenizer is the embedded one (the synthetic grammar's words).
                (None, Some(c)) if c.eq_ignore_ascii_case("nano") => PathBuf::new(),
                (None, Some(c)) if Path::new(c).is_file() => Path::new(c).with_file_name("tokenizer.json"),
                (None, Some(c)) => bail!("--config {c} is a preset: pass --tokenizer tokenizer.json (or --token-ids)"),
                (None, None) if model.uses_embedded() => PathBuf::new(),
                (None, None) => bail!("--text needs a tokenizer: pass --tokenizer tokenizer.json or use --token-ids"),
            };
            let json = if path.as_os_str().is_empty() {
                embedded::NANO_TOKENIZER.to_vec()
            } else {
                std::fs::read(&path).with_context(|| {
                    format!("cannot read the tokenizer {} (pass --tokenizer, or --token-ids instead of --text)", path.display())
                })?
            };
            let tokenizer = TextTokenizer::from_bytes(&json, config.tokenizer.clone()).map_err(|e| anyhow!("{e}"))?;
            let batch = tokenizer.encode_batch(&[sentence.as_str()]).map_err(|e| anyhow!("{e}"))?;
            note = tokenizer.vocabulary_note(sentence);
            let to_i64 = |v: &Vec<u32>| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
            (to_i64(&batch.input_ids[0]), to_i64(&batch.attention_mask[0]))
        }
        (None, None) => bail!("give the sentence with --text (or its token ids with --token-ids)"),
    };
    if ids.is_empty() {
        bail!("the sentence is empty: describe the object to segment");
    }
    if ids.len() > tc.max_position_embeddings {
        bail!("the sentence has {} tokens but at most {} are supported; shorten it", ids.len(), tc.max_position_embeddings);
    }
    if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as usize >= tc.vocab_size) {
        bail!("token id {bad} is outside the vocabulary (0..{})", tc.vocab_size);
    }
    Ok(Tokens { ids, mask, note })
}
