//! Text → token ids for the SigLIP text tower, from a checkpoint's `tokenizer.json`.
//!
//! The policies that change what the model sees are configuration, not code, because the
//! reference implementations disagree (reference §2.2, §10.4): SigLIP2 was trained on lower-cased,
//! EOS-terminated text padded to 64 tokens, while RSRefSeg 2's released weights saw
//! case-preserved text padded to the batch's longest sentence with the tokenizer's own special
//! tokens. [`TokenizerConfig::rsrefseg2`] reproduces the latter (the default for released weights),
//! [`TokenizerConfig::siglip2_pretraining`] the former.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding: every sentence keeps its own length (batches must then have one sentence or
    /// equal lengths). The pooled token is the last real token.
    None,
    /// Pad to the longest sentence of the batch (what RSRefSeg 2 trained with).
    Longest,
    /// Pad to `max_length` (SigLIP2 pre-training).
    MaxLength,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingSide {
    Left,
    Right,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialTokens {
    /// Whatever the `tokenizer.json` post-processor adds.
    FromTokenizer,
    /// No special tokens from the post-processor; add BOS and/or EOS explicitly.
    Explicit { bos: bool, eos: bool },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerConfig {
    /// Lower-case the text before tokenising.
    pub lowercase: bool,
    pub special_tokens: SpecialTokens,
    pub padding: Padding,
    pub padding_side: PaddingSide,
    /// Longest accepted sequence (special tokens included); 64 = SigLIP's position rows.
    pub max_length: usize,
    /// Cut sequences longer than `max_length` (keeping a trailing EOS) instead of rejecting them.
    pub truncate: bool,
    pub pad_token: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl TokenizerConfig {
    /// As RSRefSeg 2's code tokenises (transformers 4.53 GemmaTokenizerFast defaults, case kept).
    pub fn rsrefseg2() -> Self {
        Self {
            lowercase: false,
            special_tokens: SpecialTokens::FromTokenizer,
            padding: Padding::Longest,
            padding_side: PaddingSide::Right,
            max_length: 64,
            truncate: false,
            pad_token: "<pad>".into(),
            bos_token: "<bos>".into(),
            eos_token: "<eos>".into(),
        }
    }

    /// As SigLIP2 was pre-trained: lower-cased, EOS-terminated, padded to 64.
    pub fn siglip2_pretraining() -> Self {
        Self {
            lowercase: true,
            special_tokens: SpecialTokens::Explicit { bos: false, eos: true },
            padding: Padding::MaxLength,
            ..Self::rsrefseg2()
        }
    }
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self::rsrefseg2()
    }
}

/// A padded batch of token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizedText {
    /// `[b][l]`
    pub input_ids: Vec<Vec<u32>>,
    /// `[b][l]`, 1 = token, 0 = padding
    pub attention_mask: Vec<Vec<u32>>,
}

impl TokenizedText {
    pub fn len(&self) -> usize {
        self.input_ids.first().map_or(0, Vec::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn has_padding(&self) -> bool {
        self.attention_mask.iter().flatten().any(|&m| m == 0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TextError {
    #[error("the sentence is empty: describe the object to segment, e.g. \"the white ship left of the pier\"")]
    Empty,
    #[error("the sentence has {tokens} tokens but at most {max} are supported; shorten it")]
    TooLong { tokens: usize, max: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("sentences of different lengths cannot be batched without padding")]
    UnequalLengths,
}

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub config: TokenizerConfig,
}

impl TextTokenizer {
    /// From the bytes of a `tokenizer.json`.
    pub fn from_bytes(json: &[u8], config: TokenizerConfig) -> Result<Self, TextError> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let t = Self { inner, config };
        for tok in [&t.config.pad_token] {
            t.id_of(tok)?;
        }
        Ok(t)
    }

    fn id_of(&self, token: &str) -> Result<u32, TextError> {
        self.inner
            .token_to_id(token)
            .ok_or_else(|| TextError::Tokenizer(format!("the vocabulary has no {token:?} token")))
    }

    /// The tokenizer's encoding of `text` as the model reads it (trimmed, lowercased when the
    /// configuration says so), with that normalised text (the encoding's offsets index it).
    fn encoding(&self, text: &str, add_special_tokens: bool) -> Result<(String, tokenizers::Encoding), TextError> {
        let text = text.trim();
        let text = if self.config.lowercase { text.to_lowercase() } else { text.to_string() };
        let enc = self.inner.encode(text.as_str(), add_special_tokens).map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok((text, enc))
    }

    /// Token ids of one sentence, special tokens per the configuration, length-checked.
    pub fn encode_one(&self, text: &str) -> Result<Vec<u32>, TextError> {
        if text.trim().is_empty() {
            return Err(TextError::Empty);
        }
        let from_tok = self.config.special_tokens == SpecialTokens::FromTokenizer;
        let (_, enc) = self.encoding(text, from_tok)?;
        let mut ids = enc.get_ids().to_vec();
        let mut eos = None;
        if let SpecialTokens::Explicit { bos, eos: want_eos } = self.config.special_tokens {
            if bos {
                ids.insert(0, self.id_of(&self.config.bos_token)?);
            }
            if want_eos {
                eos = Some(self.id_of(&self.config.eos_token)?);
            }
        }
        let total = ids.len() + eos.is_some() as usize;
        if total > self.config.max_length {
            if !self.config.truncate {
                return Err(TextError::TooLong { tokens: total, max: self.config.max_length });
            }
            ids.truncate(self.config.max_length - eos.is_some() as usize);
        }
        ids.extend(eos);
        Ok(ids)
    }

    /// The words of `text` the vocabulary does not know (tokenised to its unknown token), as
    /// written, and whether every token of `text` is unknown. No words for byte-fallback
    /// vocabularies (SigLIP 2's Gemma), which know every byte.
    pub fn unknown_words(&self, text: &str) -> (Vec<String>, bool) {
        let Some(unk) = ["<unk>", "[UNK]", "<UNK>"].iter().find_map(|t| self.inner.token_to_id(t)) else {
            return (Vec::new(), false);
        };
        let Ok((text, enc)) = self.encoding(text, false) else { return (Vec::new(), false) };
        let mut words: Vec<String> = Vec::new();
        for (&id, &(a, b)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            let word = text.get(a..b).unwrap_or_default().to_string();
            if id == unk && !word.is_empty() && !words.contains(&word) {
                words.push(word);
            }
        }
        let all = !enc.get_ids().is_empty() && enc.get_ids().iter().all(|&id| id == unk);
        (words, all)
    }

    /// A warning for the user when words of `text` are unknown to the vocabulary (`None` when
    /// every word is known): the model reads each as the same unknown token.
    pub fn vocabulary_note(&self, text: &str) -> Option<String> {
        let (unknown, all) = self.unknown_words(text);
        if unknown.is_empty() {
            return None;
        }
        let list = unknown.iter().map(|w| format!("“{w}”")).collect::<Vec<_>>().join(", ");
        Some(if all {
            format!("No word of the sentence is in the model's vocabulary ({list}): the answer does not depend on it.")
        } else {
            format!("Not in the model's vocabulary, read as unknown: {list}.")
        })
    }

    /// Tokenise and pad a batch.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenizedText, TextError> {
        let seqs = texts.iter().map(|t| self.encode_one(t)).collect::<Result<Vec<_>, _>>()?;
        let longest = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let target = match self.config.padding {
            Padding::None => {
                if seqs.iter().any(|s| s.len() != longest) {
                    return Err(TextError::UnequalLengths);
                }
                longest
            }
            Padding::Longest => longest,
            Padding::MaxLength => self.config.max_length,
        };
        let pad = self.id_of(&self.config.pad_token)?;
        let mut input_ids = Vec::new();
        let mut attention_mask = Vec::new();
        for s in seqs {
            let n = target - s.len();
            let (ids, mask) = match self.config.padding_side {
                PaddingSide::Right => (
                    s.iter().copied().chain(std::iter::repeat_n(pad, n)).collect(),
                    std::iter::repeat_n(1, s.len()).chain(std::iter::repeat_n(0, n)).collect(),
                ),
                PaddingSide::Left => (
                    std::iter::repeat_n(pad, n).chain(s.iter().copied()).collect(),
                    std::iter::repeat_n(0, n).chain(std::iter::repeat_n(1, s.len())).collect(),
                ),
            };
            input_ids.push(ids);
            attention_mask.push(mask);
        }
        Ok(TokenizedText { input_ids, attention_mask })
    }
}
