//! Web model bundles: the whole model — configuration, tokenizer and (optionally quantised)
//! weights — in ONE file that the browser build downloads and reads from memory.
//!
//! Written natively (`rsrefseg export-web`, [`write_bundle`]), read anywhere ([`Bundle`]: no file
//! system, no threads, so it builds for `wasm32-unknown-unknown`).
//!
//! # Byte layout (version 1, all integers little-endian)
//!
//! | offset | size | content |
//! | --- | --- | --- |
//! | 0 | 8 | magic `RSRBUNDL` |
//! | 8 | 4 | format version, `u32` = 1 |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | manifest length `M`, `u64` |
//! | 24 | `M` | manifest, UTF-8 JSON (below) |
//! | 24 + `M` | … | zero padding to the next multiple of 64: the data start `D` |
//! | `D` | `data_len` | data blob; tensor `t` occupies `D + t.offset .. D + t.offset + t.len`, every `offset` a multiple of 64, zero padding between tensors |
//!
//! The file ends exactly at `D + data_len`: anything shorter is reported as truncated, anything
//! longer as trailing bytes.
//!
//! Manifest: `{"config": <RsRefSegConfig JSON>, "tokenizer": "<tokenizer.json text>",
//! "tensors": [{"name", "shape", "dtype": "f32"|"f16"|"q8"|"q4", "block", "scale", "offset",
//! "len", "fnv1a64"}], "fallback": {"token", "row"}, "vocab": null | {"original_size",
//! "kept_ids"}, "data_len", "writer"}`. Tensor names and shapes are
//! the canonical ones of [`crate::checkpoint`] (PyTorch names and `(out, in)` layout), so a
//! bundle loads through the same strict loader as a checkpoint: a missing, unexpected or
//! mis-shaped tensor is named with its expected and found shape. `fnv1a64` (hex) is the FNV-1a
//! hash of the tensor's bytes: a damaged download is an error naming the tensor, not a model
//! that silently computes garbage. Encodings of the values are in [`quantize`].
//!
//! # What is quantised
//!
//! With `q8` (the default) or `q4`, the weights of the `Linear` layers of the SigLIP towers, the
//! Hiera trunk and the cascaded prompter — the bulk of the parameters — are stored block-wise
//! (symmetric, block of 32 along the input dimension, one scale per block) when their input
//! width is a multiple of the block. Everything else stays `f32` (or `f16` with `half`): norms,
//! biases, position tables and embeddings, convolutions, and the whole SAM prompt encoder and
//! mask decoder (small, and where a mask's edge is decided). The text tower's token-embedding
//! table is stored `q8` row-wise (also under `q4`); it is meant to be gathered on the host
//! ([`Bundle::token_rows`]), never uploaded whole (SigLIP2's is 256 000 × 768). It can be pruned
//! to the tokens of a corpus ([`ExportOptions::vocab_corpus`]); the manifest's `vocab` then maps
//! the tokenizer's ids to the stored rows ([`Bundle::map_ids`]).
//!
//! # Weights on the device are f32: dequantised on load
//!
//! [`Bundle::load_model`] dequantises on the host and the backend runs ordinary `f32` weights;
//! quantisation shrinks the download and the bundle in memory, not the device memory or the
//! arithmetic. burn 0.21's quantised tensors were not used, for three reasons found in its
//! source (the second is pinned by a test in `tests/export_bundle.rs`):
//! - `burn::tensor::module::linear` (what `Linear::forward` calls) turns a quantised weight back
//!   into a float tensor (`TensorPrimitive::tensor()` → `dequantize`) on every call, on every
//!   backend, wgpu/cubecl included; there is no int8 matmul behind a `Linear`;
//! - NdArray's block quantisation cuts the *flattened* tensor into runs of `block` values: a
//!   block along the input dimension of burn's `[in, out]` Linear weight (`BlockSize [32, 1]`)
//!   silently becomes a run along the output dimension, different numbers from the scheme
//!   declared;
//! - reading a quantised parameter back as `f32` (`into_data().convert`) panics, which the
//!   crate's tensor walks ([`crate::checkpoint::module_tensors`], training) rely on.
//!
//! Loading goes through the strict loader, which takes every tensor at once: the host holds the
//! bundle plus an `f32` copy of the tensors it uploads (for the browser preset with the token
//! table on the host, about 0.56 GB + 1.06 GB in `q8`).

pub mod bundle;
pub mod quantize;
pub mod summary;
pub mod token_table;
pub mod vocab;

pub use bundle::{write_bundle, Bundle, BundleTensors, ExportOptions, Quant, TensorEntry, MAGIC, VERSION};
pub use quantize::{ScaleDtype, StoredDtype};
pub use summary::{estimate_bundle, BundleSummary, DtypeStats};
pub use token_table::{MappedIds, TokenTablePlacement};
pub use vocab::VocabMap;

use crate::checkpoint::LoadError;

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bytes are not a (complete, undamaged) bundle of this version.
    #[error("invalid model bundle: {0}")]
    Format(String),
    /// The bundle is well formed but its configuration or tokenizer is unusable.
    #[error("model bundle: {0}")]
    Content(String),
    /// The weights do not fit the configuration (names the tensors).
    #[error("model bundle: {0}")]
    Load(#[from] LoadError),
    /// The export could not be done with these inputs and options.
    #[error("cannot export the model bundle: {0}")]
    Export(String),
}

impl BundleError {
    pub(crate) fn format(message: impl Into<String>) -> Self {
        BundleError::Format(message.into())
    }
    pub(crate) fn export(message: impl Into<String>) -> Self {
        BundleError::Export(message.into())
    }
}
