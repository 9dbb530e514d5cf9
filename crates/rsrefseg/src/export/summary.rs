//! What a bundle holds, per storage type, and what it would weigh in `f32` (for the page and the
//! CLI); also computed from a configuration's parameter shapes alone ([`estimate_bundle`]).

use super::bundle::{param_shapes, planned_file_len, Bundle, ExportOptions, TensorEntry, TOKEN_TABLE};
use super::quantize::StoredDtype;
use super::vocab::VocabMap;
use super::BundleError;
use crate::config::RsRefSegConfig;
use burn::tensor::backend::Backend;
use std::fmt;

/// Tensors stored with one dtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtypeStats {
    pub dtype: StoredDtype,
    pub tensors: usize,
    pub values: u64,
    /// Bytes in the data blob (scales included, alignment padding not).
    pub bytes: u64,
}

/// Sizes of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleSummary {
    /// Non-empty groups, in the order f32, f16, q8, q4.
    pub by_dtype: Vec<DtypeStats>,
    pub tensors: usize,
    pub values: u64,
    pub tensor_bytes: u64,
    /// The whole file: header, manifest (configuration, tokenizer, tensor table), padding, data.
    pub file_bytes: u64,
    pub tokenizer_bytes: u64,
    /// The stored tensors as `f32` (`values · 4`).
    pub f32_tensor_bytes: u64,
    /// Token table rows, width and dtype.
    pub token_table: (usize, usize, StoredDtype),
    /// Rows kept and rows of the full vocabulary, when pruned.
    pub vocab: Option<(usize, usize)>,
}

impl BundleSummary {
    pub(crate) fn new(
        entries: &[TensorEntry],
        vocab: Option<&VocabMap>,
        file_bytes: u64,
        tokenizer_bytes: u64,
    ) -> Self {
        let mut by_dtype: Vec<DtypeStats> = Vec::new();
        for dtype in [StoredDtype::F32, StoredDtype::F16, StoredDtype::Q8, StoredDtype::Q4] {
            let group: Vec<&TensorEntry> = entries.iter().filter(|e| e.dtype == dtype).collect();
            if !group.is_empty() {
                by_dtype.push(DtypeStats {
                    dtype,
                    tensors: group.len(),
                    values: group.iter().map(|e| e.numel().unwrap_or(0) as u64).sum(),
                    bytes: group.iter().map(|e| e.len).sum(),
                });
            }
        }
        let values: u64 = by_dtype.iter().map(|g| g.values).sum();
        let table = entries.iter().find(|e| e.name == TOKEN_TABLE);
        Self {
            tensors: entries.len(),
            values,
            tensor_bytes: by_dtype.iter().map(|g| g.bytes).sum(),
            file_bytes,
            tokenizer_bytes,
            f32_tensor_bytes: values * 4,
            token_table: table.map_or((0, 0, StoredDtype::F32), |e| (e.shape[0], e.shape[1], e.dtype)),
            vocab: vocab.map(|v| (v.kept_ids.len(), v.original_size)),
            by_dtype,
        }
    }

    /// The same bundle with every tensor in `f32`.
    pub fn f32_file_bytes(&self) -> u64 {
        self.file_bytes - self.tensor_bytes + self.f32_tensor_bytes
    }
}

/// Decimal kB below a megabyte, MB above.
fn mb(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else {
        format!("{:.2} MB", bytes as f64 / 1e6)
    }
}

impl fmt::Display for BundleSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<6} {:>8} {:>13} {:>12}", "dtype", "tensors", "values", "bytes")?;
        for g in &self.by_dtype {
            writeln!(f, "{:<6} {:>8} {:>13} {:>12}", g.dtype.name(), g.tensors, g.values, mb(g.bytes))?;
        }
        writeln!(f, "{:<6} {:>8} {:>13} {:>12}", "all", self.tensors, self.values, mb(self.tensor_bytes))?;
        let (rows, d, dtype) = self.token_table;
        let pruned = match self.vocab {
            Some((kept, full)) => format!(" (vocabulary pruned: {kept} of {full} rows)"),
            None => String::new(),
        };
        writeln!(f, "token table: {rows} × {d} {dtype}{pruned}")?;
        writeln!(
            f,
            "file: {} ({} bytes; tokenizer {}, manifest and padding {})",
            mb(self.file_bytes),
            self.file_bytes,
            mb(self.tokenizer_bytes),
            mb(self.file_bytes - self.tensor_bytes - self.tokenizer_bytes)
        )?;
        write!(
            f,
            "as f32: {} (tensors {}) → {:.2}× smaller",
            mb(self.f32_file_bytes()),
            mb(self.f32_tensor_bytes),
            self.f32_file_bytes() as f64 / self.file_bytes.max(1) as f64
        )
    }
}

impl Bundle {
    /// Counts and bytes per dtype, and the `f32` comparison.
    pub fn summary(&self) -> BundleSummary {
        BundleSummary::new(self.tensors(), self.vocab(), self.len_bytes() as u64, self.tokenizer_json().len() as u64)
    }
}

/// The summary of the bundle [`super::write_bundle`] would write for a model of `config`,
/// computed from the parameter shapes (no weights; lazily initialised parameters are not
/// allocated). Without a tokenizer its bytes are left out and pruning is not possible.
pub fn estimate_bundle<B: Backend>(
    config: &RsRefSegConfig,
    tokenizer_json: Option<&str>,
    opts: &ExportOptions,
    device: &B::Device,
) -> Result<BundleSummary, BundleError> {
    let model = config.init::<B>(device).map_err(BundleError::export)?;
    let (entries, vocab, file) = planned_file_len(config, tokenizer_json, param_shapes(&model), opts)?;
    Ok(BundleSummary::new(&entries, vocab.as_ref(), file, tokenizer_json.map_or(0, |t| t.len() as u64)))
}
