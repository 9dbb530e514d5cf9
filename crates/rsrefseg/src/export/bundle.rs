//! The bundle file: writer ([`write_bundle`]) and reader ([`Bundle`]). Layout in the
//! [module documentation](super).

use super::quantize::{self, Encoding, ScaleDtype, StoredDtype};
use super::token_table::TokenTablePlacement;
use super::vocab::VocabMap;
use super::BundleError;
use crate::checkpoint::{module_tensors, HostTensor, Layout, LoadOptions, PathTracker, TensorMap};
use crate::config::RsRefSegConfig;
use crate::model::{load_rsrefseg_tensors, RsRefSeg};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// First 8 bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"RSRBUNDL";
/// Format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Magic, version, reserved word, manifest length.
const HEADER_LEN: usize = 24;
/// Alignment of the data start and of every tensor in it.
pub const ALIGN: usize = 64;

/// Canonical name of the text tower's token-embedding table.
pub const TOKEN_TABLE: &str = "siglip.text_model.embeddings.token_embedding.weight";

/// Parts whose `Linear` weights are quantised (the SAM neck, prompt encoder and mask decoder
/// are not).
const QUANTIZED_PARTS: [&str; 3] = ["siglip.", "sam.image_encoder.trunk.", "prompter."];

/// Storage of the `Linear` weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quant {
    /// No quantisation.
    F32,
    /// Symmetric int8 per block (the default).
    #[default]
    Q8,
    /// Symmetric int4 per block, two values per byte.
    Q4,
}

/// What [`write_bundle`] stores and how.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub quant: Quant,
    /// Store every non-quantised tensor and every block scale as `f16` instead of `f32`.
    pub half: bool,
    /// Values per quantisation block (along the input dimension; q4 needs it even).
    pub block: usize,
    /// Keep only the token-embedding rows of this corpus (one sentence per line) and the
    /// special tokens; see [`super::vocab`].
    pub vocab_corpus: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self { quant: Quant::Q8, half: false, block: 32, vocab_corpus: None }
    }
}

/// The canonical tensors of a model and which of them are `Linear` weights (only those are
/// quantised; the distinction comes from the module tree, not from names).
#[derive(Clone, Debug, Default)]
pub struct BundleTensors {
    pub tensors: TensorMap,
    pub linear_weights: BTreeSet<String>,
}

impl BundleTensors {
    pub fn from_model<B: Backend>(model: &RsRefSeg<B>) -> Self {
        let linear_weights = param_shapes(model).into_iter().filter(|p| p.linear).map(|p| p.name).collect();
        Self { tensors: module_tensors(model), linear_weights }
    }
}

/// A parameter's canonical name and shape, read without initialising it (lazy parameters keep
/// their shape), and whether it is a `Linear` weight.
#[derive(Clone, Debug)]
pub(crate) struct ParamShape {
    pub name: String,
    pub shape: Vec<usize>,
    pub linear: bool,
}

pub(crate) fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamShape> {
    struct Shapes {
        tracker: PathTracker,
        out: Vec<ParamShape>,
    }
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.tracker.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.tracker.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let (name, layout) = self.tracker.current();
            let mut shape = param.lazy_shape().to_vec();
            let linear = layout == Layout::Transposed;
            if linear {
                shape.reverse();
            }
            self.out.push(ParamShape { name, shape, linear });
        }
    }
    let mut v = Shapes { tracker: PathTracker::default(), out: Vec::new() };
    module.visit(&mut v);
    v.out
}

/// One tensor of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Canonical name ([`crate::checkpoint`]).
    pub name: String,
    /// Canonical (PyTorch) shape.
    pub shape: Vec<usize>,
    pub dtype: StoredDtype,
    /// Values per quantisation block (q8 / q4), 0 otherwise.
    #[serde(default)]
    pub block: usize,
    /// Scale type of a quantised tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleDtype>,
    /// Byte offset in the data blob (a multiple of 64).
    pub offset: u64,
    /// Byte length.
    pub len: u64,
    /// FNV-1a 64 of the bytes, 16 hex digits.
    pub fnv1a64: String,
}

impl TensorEntry {
    /// Number of values; `None` if the shape overflows.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    pub(crate) fn encoding(&self) -> Encoding {
        Encoding { dtype: self.dtype, block: self.block, scale: self.scale.unwrap_or(ScaleDtype::F32) }
    }
}

/// The token a tokenizer id outside the stored table reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub token: String,
    /// Row in the stored token table.
    pub row: u32,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    config: RsRefSegConfig,
    tokenizer: String,
    tensors: Vec<TensorEntry>,
    fallback: Fallback,
    #[serde(default)]
    vocab: Option<VocabMap>,
    data_len: u64,
    #[serde(default)]
    writer: String,
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Storage of one tensor under `opts`.
fn encoding_for(name: &str, shape: &[usize], linear: bool, opts: &ExportOptions) -> Encoding {
    let plain = Encoding::plain(if opts.half { StoredDtype::F16 } else { StoredDtype::F32 });
    let quantized =
        |dtype| Encoding { dtype, block: opts.block, scale: if opts.half { ScaleDtype::F16 } else { ScaleDtype::F32 } };
    let fits = shape.len() == 2 && shape[1] > 0 && shape[1].is_multiple_of(opts.block);
    let part = QUANTIZED_PARTS.iter().any(|p| name.starts_with(p));
    match opts.quant {
        Quant::F32 => plain,
        // The token table is gathered row by row on the host: q8 rows, whatever the Linear dtype.
        _ if name == TOKEN_TABLE && fits => quantized(StoredDtype::Q8),
        Quant::Q8 if linear && part && fits => quantized(StoredDtype::Q8),
        Quant::Q4 if linear && part && fits => quantized(StoredDtype::Q4),
        _ => plain,
    }
}

/// Entries with encodings and offsets (checksums left empty) for tensors of these shapes.
pub(crate) fn plan_entries(
    shapes: &[ParamShape],
    opts: &ExportOptions,
) -> Result<(Vec<TensorEntry>, u64), BundleError> {
    let mut offset = 0usize;
    let mut entries = Vec::with_capacity(shapes.len());
    for p in shapes {
        let enc = encoding_for(&p.name, &p.shape, p.linear, opts);
        let n = p.shape.iter().product::<usize>();
        let len = enc.encoded_len(n).ok_or_else(|| BundleError::export(format!("{}: too large", p.name)))?;
        offset = align(offset);
        entries.push(TensorEntry {
            name: p.name.clone(),
            shape: p.shape.clone(),
            dtype: enc.dtype,
            block: enc.block,
            scale: enc.dtype.is_quantized().then_some(enc.scale),
            offset: offset as u64,
            len: len as u64,
            fnv1a64: String::new(),
        });
        offset += len;
    }
    Ok((entries, offset as u64))
}

fn check_options(opts: &ExportOptions) -> Result<(), BundleError> {
    if opts.block == 0 || (opts.quant == Quant::Q4 && !opts.block.is_multiple_of(2)) {
        return Err(BundleError::export(format!("block {} is not valid (positive; even for q4)", opts.block)));
    }
    Ok(())
}

/// Check the tokenizer against the configuration; returns the parsed tokenizer.
pub(crate) fn check_tokenizer(
    config: &RsRefSegConfig,
    tokenizer_json: &str,
) -> Result<tokenizers::Tokenizer, BundleError> {
    crate::encoders::TextTokenizer::from_bytes(tokenizer_json.as_bytes(), config.tokenizer.clone())
        .map_err(|e| BundleError::export(format!("{e}")))?;
    let tok = tokenizers::Tokenizer::from_bytes(tokenizer_json.as_bytes())
        .map_err(|e| BundleError::export(format!("tokenizer: {e}")))?;
    let size = tok.get_vocab_size(true);
    let rows = config.siglip.text_config.vocab_size;
    if size > rows {
        return Err(BundleError::export(format!(
            "the tokenizer has {size} tokens but the model's token table has {rows} rows (wrong tokenizer.json?)"
        )));
    }
    Ok(tok)
}

/// The fallback token (unknown, else pad) and its original id.
fn fallback_token(
    config: &RsRefSegConfig,
    tokenizer_json: &str,
    tok: &tokenizers::Tokenizer,
) -> Result<(u32, String), BundleError> {
    if let Some(u) = super::vocab::unknown_token(tokenizer_json, tok) {
        return Ok(u);
    }
    let pad = &config.tokenizer.pad_token;
    let id = tok.token_to_id(pad).ok_or_else(|| BundleError::export(format!("the tokenizer has no {pad:?} token")))?;
    Ok((id, pad.clone()))
}

/// The manifest of a bundle of these tensor shapes, checksums empty. Without a tokenizer
/// (size estimates only) nothing is checked against one and the fallback row is 0.
fn plan_bundle(
    config: &RsRefSegConfig,
    tokenizer_json: Option<&str>,
    shapes: &mut [ParamShape],
    opts: &ExportOptions,
) -> Result<Manifest, BundleError> {
    config.validate().map_err(BundleError::export)?;
    check_options(opts)?;
    let rows = config.siglip.text_config.vocab_size;
    let (fallback_id, fallback_name, vocab) = match tokenizer_json {
        Some(json) => {
            let tok = check_tokenizer(config, json)?;
            let (id, name) = fallback_token(config, json, &tok)?;
            let vocab = match &opts.vocab_corpus {
                Some(corpus) => Some(VocabMap::from_corpus(json, &config.tokenizer, rows, corpus)?),
                None => None,
            };
            (id, name, vocab)
        }
        None if opts.vocab_corpus.is_some() => {
            return Err(BundleError::export("vocabulary pruning needs the tokenizer"))
        }
        None => (0, String::new(), None),
    };
    let table = shapes
        .iter_mut()
        .find(|p| p.name == TOKEN_TABLE)
        .ok_or_else(|| BundleError::export(format!("no {TOKEN_TABLE} among the tensors")))?;
    if table.shape.len() != 2 || table.shape[0] != rows {
        return Err(BundleError::export(format!(
            "{TOKEN_TABLE} has shape {:?}, the configuration {rows} rows",
            table.shape
        )));
    }
    let fallback_row = match &vocab {
        Some(v) => {
            table.shape[0] = v.kept_ids.len();
            v.row_of(fallback_id).expect("special tokens are kept")
        }
        None => fallback_id,
    };
    let (tensors, data_len) = plan_entries(shapes, opts)?;
    Ok(Manifest {
        config: config.clone(),
        tokenizer: tokenizer_json.unwrap_or_default().to_string(),
        tensors,
        fallback: Fallback { token: fallback_name, row: fallback_row },
        vocab,
        data_len,
        writer: format!("rsrefseg {}", env!("CARGO_PKG_VERSION")),
    })
}

fn assemble(manifest: &Manifest, data: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(manifest).expect("serialisable manifest");
    let start = align(HEADER_LEN + json.len());
    let mut out = Vec::with_capacity(start + data.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(start, 0);
    out.extend_from_slice(data);
    out
}

/// The size of the file [`write_bundle`] would write for these tensor shapes (checksum text
/// has a fixed width, so this is exact).
pub(crate) fn planned_file_len(
    config: &RsRefSegConfig,
    tokenizer_json: Option<&str>,
    mut shapes: Vec<ParamShape>,
    opts: &ExportOptions,
) -> Result<(Vec<TensorEntry>, Option<VocabMap>, u64), BundleError> {
    // The writer lays tensors out in name order.
    shapes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut manifest = plan_bundle(config, tokenizer_json, &mut shapes, opts)?;
    manifest.tensors.iter_mut().for_each(|e| e.fnv1a64 = format!("{:016x}", 0));
    let json_len = serde_json::to_vec(&manifest).expect("serialisable manifest").len();
    let file = align(HEADER_LEN + json_len) as u64 + manifest.data_len;
    Ok((manifest.tensors, manifest.vocab, file))
}

/// Write a bundle of `tensors` (canonical names, every parameter of the model `config`
/// describes) with the `tokenizer.json` text.
///
/// The tensors are not matched against the model here (that needs a backend): read the bundle
/// back with [`Bundle::from_bytes`] and [`Bundle::load_model`] to check it, as
/// `rsrefseg export-web` does.
pub fn write_bundle(
    config: &RsRefSegConfig,
    tokenizer_json: &str,
    tensors: &BundleTensors,
    opts: &ExportOptions,
) -> Result<Vec<u8>, BundleError> {
    let mut shapes: Vec<ParamShape> = tensors
        .tensors
        .iter()
        .map(|(name, t)| ParamShape {
            name: name.clone(),
            shape: t.shape.clone(),
            linear: tensors.linear_weights.contains(name),
        })
        .collect();
    let mut manifest = plan_bundle(config, Some(tokenizer_json), &mut shapes, opts)?;
    let mut data = vec![0u8; manifest.data_len as usize];
    for entry in &mut manifest.tensors {
        let t = &tensors.tensors[&entry.name];
        let pruned;
        let values = match (&manifest.vocab, entry.name == TOKEN_TABLE) {
            (Some(v), true) => {
                let d = t.shape[1];
                pruned = v
                    .kept_ids
                    .iter()
                    .flat_map(|&id| &t.data[id as usize * d..(id as usize + 1) * d])
                    .copied()
                    .collect();
                &pruned
            }
            _ => &t.data,
        };
        let row = entry.shape.last().copied().unwrap_or(1);
        let bytes = quantize::encode(values, row, entry.encoding())
            .map_err(|e| BundleError::export(format!("{}: {e}", entry.name)))?;
        debug_assert_eq!(bytes.len() as u64, entry.len);
        let at = entry.offset as usize;
        data[at..at + bytes.len()].copy_from_slice(&bytes);
        entry.fnv1a64 = format!("{:016x}", quantize::fnv1a64(&bytes));
    }
    Ok(assemble(&manifest, &data))
}

/// A bundle read into memory and checked: header, manifest, configuration, every tensor's
/// place, size and checksum.
pub struct Bundle {
    config: RsRefSegConfig,
    tokenizer: String,
    entries: Vec<TensorEntry>,
    index: HashMap<String, usize>,
    fallback: Fallback,
    vocab: Option<VocabMap>,
    writer: String,
    bytes: Vec<u8>,
    data_start: usize,
}

impl Bundle {
    /// Parse and check a bundle. Every problem is an error that says what is wrong (never a
    /// panic): not a bundle, another version, truncated or with trailing bytes, a manifest that
    /// does not parse, a tensor outside the data, of the wrong length or with a bad checksum.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Bundle, BundleError> {
        let n = bytes.len();
        if n >= 8 && bytes[..8] != MAGIC {
            // A safetensors file starts with its header length, then '{'.
            let hint = if n > 8 && bytes[8] == b'{' {
                " (this looks like a safetensors file: convert it with `rsrefseg export-web`)"
            } else {
                ""
            };
            return Err(BundleError::format(format!(
                "not an rsrefseg model bundle: it does not start with \"RSRBUNDL\"{hint}"
            )));
        }
        if n < HEADER_LEN {
            return Err(BundleError::format(format!(
                "{n} bytes: too short for a model bundle (the header alone has {HEADER_LEN})"
            )));
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let version = word(8);
        if version != VERSION {
            return Err(BundleError::format(format!(
                "bundle format version {version}; this build reads version {VERSION}"
            )));
        }
        let manifest_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        let manifest_end = usize::try_from(manifest_len)
            .ok()
            .and_then(|m| m.checked_add(HEADER_LEN))
            .filter(|&end| end <= n)
            .ok_or_else(|| {
                BundleError::format(format!(
                    "the manifest ({manifest_len} bytes) runs past the end of the file ({n} bytes): truncated?"
                ))
            })?;
        let manifest: Manifest = serde_json::from_slice(&bytes[HEADER_LEN..manifest_end])
            .map_err(|e| BundleError::format(format!("manifest: {e}")))?;
        manifest.config.validate().map_err(|e| BundleError::Content(format!("configuration: {e}")))?;
        let data_start = align(manifest_end);
        let data_len = usize::try_from(manifest.data_len).map_err(|_| BundleError::format("data length overflows"))?;
        let expected = data_start.checked_add(data_len).ok_or_else(|| BundleError::format("data length overflows"))?;
        if n < expected {
            return Err(BundleError::format(format!(
                "truncated: the file has {n} bytes, the manifest describes {expected}"
            )));
        }
        if n > expected {
            return Err(BundleError::format(format!(
                "{} trailing bytes after the data (the manifest describes {expected})",
                n - expected
            )));
        }
        let data = &bytes[data_start..];
        let mut index = HashMap::new();
        let mut spans = Vec::with_capacity(manifest.tensors.len());
        for (i, e) in manifest.tensors.iter().enumerate() {
            if index.insert(e.name.clone(), i).is_some() {
                return Err(BundleError::format(format!("tensor {} appears twice", e.name)));
            }
            let bad = |why: String| BundleError::format(format!("tensor {} {:?} {}: {why}", e.name, e.shape, e.dtype));
            let numel = e.numel().ok_or_else(|| bad("shape overflows".into()))?;
            let enc = e.encoding();
            enc.check(numel, e.shape.last().copied().unwrap_or(1)).map_err(bad)?;
            let want = enc.encoded_len(numel).ok_or_else(|| bad("size overflows".into()))? as u64;
            if e.len != want {
                return Err(bad(format!("{} bytes stored, {want} expected", e.len)));
            }
            if !e.offset.is_multiple_of(ALIGN as u64) {
                return Err(bad(format!("offset {} is not a multiple of {ALIGN}", e.offset)));
            }
            let end = e.offset.checked_add(e.len).filter(|&end| end <= data_len as u64);
            let Some(end) = end else {
                return Err(bad(format!("bytes {}+{} lie outside the {data_len}-byte data", e.offset, e.len)));
            };
            let stored = &data[e.offset as usize..end as usize];
            if format!("{:016x}", quantize::fnv1a64(stored)) != e.fnv1a64 {
                return Err(bad("checksum mismatch: the file is damaged".into()));
            }
            spans.push((e.offset, end, i));
        }
        spans.sort_unstable();
        if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
            let names = (&manifest.tensors[w[0].2].name, &manifest.tensors[w[1].2].name);
            return Err(BundleError::format(format!("tensors {} and {} overlap", names.0, names.1)));
        }
        let bundle = Bundle {
            config: manifest.config,
            tokenizer: manifest.tokenizer,
            entries: manifest.tensors,
            index,
            fallback: manifest.fallback,
            vocab: manifest.vocab,
            writer: manifest.writer,
            bytes,
            data_start,
        };
        bundle.check_token_table()?;
        Ok(bundle)
    }

    fn check_token_table(&self) -> Result<(), BundleError> {
        let content = |m: String| Err(BundleError::Content(m));
        let Some(e) = self.entry(TOKEN_TABLE) else {
            return content(format!("no token table ({TOKEN_TABLE})"));
        };
        if e.shape.len() != 2 {
            return content(format!("the token table has shape {:?}", e.shape));
        }
        let rows = e.shape[0];
        let original = self.config.siglip.text_config.vocab_size;
        match &self.vocab {
            Some(v) => {
                v.validate(rows).map_err(BundleError::Content)?;
                if v.original_size != original {
                    return content(format!(
                        "the vocabulary map is for {} tokens, the configuration has {original}",
                        v.original_size
                    ));
                }
            }
            None if rows != original => {
                return content(format!("the token table has {rows} rows, the configuration {original}"))
            }
            None => {}
        }
        if self.fallback.row as usize >= rows {
            return content(format!("fallback row {} outside the token table's {rows} rows", self.fallback.row));
        }
        Ok(())
    }

    /// The model configuration (with the tokenizer's full vocabulary size, also when the
    /// token table is pruned).
    pub fn config(&self) -> &RsRefSegConfig {
        &self.config
    }

    /// The `tokenizer.json` text.
    pub fn tokenizer_json(&self) -> &str {
        &self.tokenizer
    }

    /// The manifest's tensor table.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.entries
    }

    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// The vocabulary map of a pruned bundle.
    pub fn vocab(&self) -> Option<&VocabMap> {
        self.vocab.as_ref()
    }

    /// The token that ids outside the stored table read.
    pub fn fallback(&self) -> &Fallback {
        &self.fallback
    }

    /// Who wrote the bundle (`rsrefseg <version>`).
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Size of the whole bundle in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The stored bytes of a tensor.
    pub fn tensor_bytes(&self, e: &TensorEntry) -> &[u8] {
        let at = self.data_start + e.offset as usize;
        &self.bytes[at..at + e.len as usize]
    }

    /// A tensor's values as stored, dequantised to `f32` (canonical layout).
    pub fn tensor(&self, name: &str) -> Option<HostTensor> {
        let e = self.entry(name)?;
        let n = e.numel().expect("checked on read");
        Some(HostTensor::new(e.shape.clone(), quantize::decode(self.tensor_bytes(e), n, e.encoding())))
    }

    /// The configuration the loaded model is built with: the token table has as many rows as
    /// the bundle stores (pruned) or one placeholder row ([`TokenTablePlacement::Host`]).
    pub fn model_config(&self, placement: TokenTablePlacement) -> RsRefSegConfig {
        let mut c = self.config.clone();
        c.siglip.text_config.vocab_size = match placement {
            TokenTablePlacement::Device => self.entry(TOKEN_TABLE).expect("checked on read").shape[0],
            TokenTablePlacement::Host => 1,
        };
        c
    }

    /// Every tensor dequantised to `f32` under its canonical name, as the model is loaded from
    /// them (the token table replaced by one zero row for [`TokenTablePlacement::Host`]).
    pub fn host_tensors(&self, placement: TokenTablePlacement) -> TensorMap {
        let mut out = TensorMap::new();
        for e in &self.entries {
            let t = if e.name == TOKEN_TABLE && placement == TokenTablePlacement::Host {
                HostTensor::new(vec![1, e.shape[1]], vec![0.0; e.shape[1]])
            } else {
                self.tensor(&e.name).expect("listed")
            };
            out.insert(e.name.clone(), t);
        }
        out
    }

    /// The model on `device`, weights dequantised to `f32` on the host (see the
    /// [module documentation](super)), loaded by the strict checkpoint loader. The token table
    /// is uploaded as stored: token ids must go through [`Self::map_ids`] when the bundle is
    /// pruned. For a large vocabulary use [`Self::load_model_with`] and
    /// [`TokenTablePlacement::Host`].
    pub fn load_model<B: Backend>(&self, device: &B::Device) -> Result<RsRefSeg<B>, BundleError> {
        self.load_model_with(device, TokenTablePlacement::Device)
    }

    /// [`Self::load_model`] with a choice of where the token table lives.
    pub fn load_model_with<B: Backend>(
        &self,
        device: &B::Device,
        placement: TokenTablePlacement,
    ) -> Result<RsRefSeg<B>, BundleError> {
        let config = self.model_config(placement);
        let (model, _) =
            load_rsrefseg_tensors::<B>(self.host_tensors(placement), &config, device, LoadOptions::default())?;
        Ok(model)
    }
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("bytes", &self.bytes.len())
            .field("tensors", &self.entries.len())
            .field("vocab", &self.vocab.as_ref().map(|v| v.kept_ids.len()))
            .field("writer", &self.writer)
            .finish()
    }
}
