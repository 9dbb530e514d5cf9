//! The token-embedding table on the host: id mapping and row gathering.
//!
//! A text query needs a few dozen rows of the token table; SigLIP2's has 256 000 × 768 values
//! (786 MB in f32, over WebGPU's default 128 MiB storage-buffer binding). So the table can stay
//! in the bundle, on the host: [`Bundle::token_rows`] dequantises only the rows of a sentence,
//! and with a model loaded by [`TokenTablePlacement::Host`], [`Bundle::install_token_rows`]
//! uploads just those rows as the model's table before each query and renumbers the ids into it.
//! The model code is unchanged: its `Embedding` simply has as many rows as the batch uses.

use super::bundle::{Bundle, TOKEN_TABLE};
use super::quantize;
use crate::model::RsRefSeg;
use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use std::collections::HashMap;

/// Where [`Bundle::load_model_with`] puts the token table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenTablePlacement {
    /// On the device, as stored (whole, or pruned to a corpus): feed ids from [`Bundle::map_ids`].
    #[default]
    Device,
    /// On the host: the model gets a one-row placeholder table, and
    /// [`Bundle::install_token_rows`] puts the rows of each batch in it.
    Host,
}

/// Token ids after mapping to stored rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappedIds {
    /// The ids to give the model.
    pub ids: Vec<u32>,
    /// Tokenizer ids the bundle has no row for (each once, in order of appearance); they read
    /// the fallback row instead.
    pub unknown: Vec<u32>,
    /// A sentence for the user when `unknown` is not empty.
    pub note: Option<String>,
}

impl Bundle {
    /// Rows of the token table's tensor, and its row width.
    fn table_dims(&self) -> (usize, usize) {
        let e = self.entry(TOKEN_TABLE).expect("checked on read");
        (e.shape[0], e.shape[1])
    }

    /// Stored rows of tokenizer ids: the identity on a full table, the vocabulary map on a
    /// pruned one. Ids without a row read the fallback row (`<unk>`, or the pad token) and are
    /// listed in [`MappedIds::unknown`] with a note.
    pub fn map_ids(&self, ids: &[u32]) -> MappedIds {
        let (rows, _) = self.table_dims();
        let fallback = self.fallback();
        let mut unknown = Vec::new();
        let mapped = ids
            .iter()
            .map(|&id| {
                let row = match self.vocab() {
                    Some(v) => v.row_of(id),
                    None => ((id as usize) < rows).then_some(id),
                };
                row.unwrap_or_else(|| {
                    if !unknown.contains(&id) {
                        unknown.push(id);
                    }
                    fallback.row
                })
            })
            .collect();
        let note = (!unknown.is_empty()).then(|| {
            let why = match self.vocab() {
                Some(v) => format!("its vocabulary was pruned to {} tokens", v.kept_ids.len()),
                None => format!("its token table has {rows} rows"),
            };
            format!(
                "{} token id(s) {unknown:?} are not in this model bundle ({why}); the model reads {} in their place, \
                 so the result may differ from the full model's",
                unknown.len(),
                fallback.token
            )
        });
        MappedIds { ids: mapped, unknown, note }
    }

    /// The token-embedding rows of tokenizer ids, dequantised: `[ids.len(), d]` row-major.
    /// Ids are mapped as by [`Self::map_ids`].
    pub fn token_rows(&self, ids: &[u32]) -> Vec<f32> {
        self.rows(&self.map_ids(ids).ids)
    }

    /// Stored rows `rows`, dequantised.
    fn rows(&self, rows: &[u32]) -> Vec<f32> {
        let e = self.entry(TOKEN_TABLE).expect("checked on read");
        let (n_rows, d) = self.table_dims();
        let bytes = self.tensor_bytes(e);
        let mut out = Vec::with_capacity(rows.len() * d);
        for &r in rows {
            out.extend(quantize::decode_range(bytes, n_rows * d, e.encoding(), r as usize * d, d));
        }
        out
    }

    /// Before a query on a model loaded with [`TokenTablePlacement::Host`]: make the model's
    /// token table the rows that `ids` (a flattened `[b, l]` batch of tokenizer ids) need, and
    /// return the batch's ids renumbered into that table (same order and length).
    pub fn install_token_rows<B: Backend>(
        &self,
        model: &mut RsRefSeg<B>,
        ids: &[u32],
        device: &B::Device,
    ) -> MappedIds {
        let mapped = self.map_ids(ids);
        let mut local_of: HashMap<u32, u32> = HashMap::new();
        let mut used = Vec::new();
        let local: Vec<u32> = mapped
            .ids
            .iter()
            .map(|&row| {
                *local_of.entry(row).or_insert_with(|| {
                    used.push(row);
                    used.len() as u32 - 1
                })
            })
            .collect();
        let (_, d) = self.table_dims();
        let k = used.len().max(1);
        let mut data = self.rows(&used);
        data.resize(k * d, 0.0);
        let table = Tensor::<B, 2>::from_data(TensorData::new(data, [k, d]), device);
        model.siglip.text_model.embeddings.token_embedding.weight = Param::from_tensor(table);
        MappedIds { ids: local, ..mapped }
    }
}
