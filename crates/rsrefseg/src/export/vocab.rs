//! Vocabulary pruning: keep only the token-embedding rows a corpus needs.
//!
//! SigLIP2's text tower has a 256 000-row token table (≈ 197 M values, more than the rest of
//! the browser model together) while the referring expressions of a domain use a few thousand
//! tokens. [`VocabMap::from_corpus`] tokenises a corpus with the bundle's own tokenizer and
//! policy and keeps the rows of every token it produces plus every special token; the tokenizer
//! itself is kept whole, so any text still tokenises to the original ids, and the reader maps
//! those ids to stored rows ([`crate::export::Bundle::map_ids`]). A token outside the kept set
//! reads the bundle's fallback row (`<unk>` when the tokenizer has one, the pad token
//! otherwise) and is reported, since the model then sees a different sentence.

use super::BundleError;
use crate::encoders::tokenizer::{SpecialTokens, TokenizerConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Which rows of the original token table a pruned bundle stores (the manifest's `vocab`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabMap {
    /// Rows of the original table (the configuration's `vocab_size`).
    pub original_size: usize,
    /// Original id of each stored row, strictly ascending: row `r` holds token `kept_ids[r]`.
    pub kept_ids: Vec<u32>,
}

impl VocabMap {
    /// The rows needed by `corpus` (one sentence per line) under the tokenizer and policy, plus
    /// the special tokens (the tokenizer's added special tokens, the policy's pad / BOS / EOS
    /// and the model's unknown token).
    pub fn from_corpus(
        tokenizer_json: &str,
        policy: &TokenizerConfig,
        original_size: usize,
        corpus: &str,
    ) -> Result<Self, BundleError> {
        let tok = tokenizers::Tokenizer::from_bytes(tokenizer_json.as_bytes())
            .map_err(|e| BundleError::export(format!("tokenizer: {e}")))?;
        let mut kept = BTreeSet::new();
        for (id, added) in tok.get_added_tokens_decoder() {
            if added.special {
                kept.insert(id);
            }
        }
        for t in [&policy.pad_token, &policy.bos_token, &policy.eos_token] {
            kept.extend(tok.token_to_id(t));
        }
        let unk = unknown_token(tokenizer_json, &tok);
        kept.extend(unk.as_ref().map(|(id, _)| *id));

        let add_special = policy.special_tokens == SpecialTokens::FromTokenizer;
        let mut sentences = 0usize;
        for line in corpus.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let text = if policy.lowercase { line.to_lowercase() } else { line.to_string() };
            let enc = tok
                .encode(text.as_str(), add_special)
                .map_err(|e| BundleError::export(format!("tokenizing the corpus line {line:?}: {e}")))?;
            kept.extend(enc.get_ids().iter().copied());
            sentences += 1;
        }
        if sentences == 0 {
            return Err(BundleError::export("the vocabulary corpus has no sentences (one per line)"));
        }
        if let Some(&bad) = kept.iter().find(|&&id| id as usize >= original_size) {
            return Err(BundleError::export(format!(
                "the tokenizer produces id {bad} but the model's token table has {original_size} rows"
            )));
        }
        Ok(Self { original_size, kept_ids: kept.into_iter().collect() })
    }

    /// Check the map against the stored table (`rows` rows).
    pub fn validate(&self, rows: usize) -> Result<(), String> {
        if self.kept_ids.len() != rows {
            return Err(format!(
                "the vocabulary map keeps {} tokens but the token table has {rows} rows",
                self.kept_ids.len()
            ));
        }
        if self.kept_ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err("the vocabulary map's kept ids are not strictly ascending".into());
        }
        if let Some(&bad) = self.kept_ids.iter().find(|&&id| id as usize >= self.original_size) {
            return Err(format!("the vocabulary map keeps id {bad} of a {}-token vocabulary", self.original_size));
        }
        Ok(())
    }

    /// Stored row of an original id, if kept.
    pub fn row_of(&self, id: u32) -> Option<u32> {
        self.kept_ids.binary_search(&id).ok().map(|r| r as u32)
    }
}

/// The tokenizer model's unknown token (id and text): WordLevel / BPE / WordPiece name it
/// (`unk_token`), Unigram gives its id (`unk_id`).
pub(crate) fn unknown_token(json: &str, tok: &tokenizers::Tokenizer) -> Option<(u32, String)> {
    let doc: serde_json::Value = serde_json::from_str(json).ok()?;
    let model = doc.get("model")?;
    if let Some(t) = model.get("unk_token").and_then(|v| v.as_str()) {
        return tok.token_to_id(t).map(|id| (id, t.to_string()));
    }
    let id = model.get("unk_id").and_then(|v| v.as_u64())? as u32;
    tok.id_to_token(id).map(|t| (id, t))
}
