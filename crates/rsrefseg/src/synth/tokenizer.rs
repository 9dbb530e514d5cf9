//! A word-level `tokenizer.json` for the synthetic benchmark's vocabulary (the `nano` model's).
//!
//! The grammar of [`super::expressions`] produces only the words of [`super::vocabulary`], so a
//! word-level model covers it exactly, with one id per word and nothing learned: ids are
//! `<pad>` = 0, `<eos>` = 1, `<bos>` = 2, `<unk>` = 3 (the order of the Gemma tokenizer the
//! released SigLIP2 models use, so [`crate::encoders::TokenizerConfig`]'s token names hold), then
//! the words in `vocabulary()` order from 4. Text is lower-cased and split on whitespace and
//! punctuation; the post-processor appends `<eos>`, so with right padding the position the SigLIP
//! text tower pools (the last one) is `<eos>` for the longest sentence of a batch and the sentence
//! representation is learned at one fixed token.
//!
//! The generated file is committed as `models/nano/tokenizer.json`; a test checks that it still
//! equals [`tokenizer_json`], so a vocabulary change cannot leave it stale.

use serde_json::{json, Map, Value};

/// Special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<eos>", "<bos>", "<unk>"];

/// Vocabulary size of the word-level tokenizer: the specials plus every synthetic word.
pub fn vocab_size() -> usize {
    SPECIAL_TOKENS.len() + super::vocabulary().len()
}

/// The `tokenizer.json` text (as the `tokenizers` crate serialises it, vocabulary in id order).
pub fn tokenizer_json() -> String {
    let mut vocab = Map::new();
    for (id, word) in SPECIAL_TOKENS.iter().map(|s| s.to_string()).chain(super::vocabulary()).enumerate() {
        vocab.insert(word, json!(id));
    }
    let added: Vec<Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
    let eos = json!({"SpecialToken": {"id": "<eos>", "type_id": 0}});
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [seq("A"), eos.clone()],
            "pair": [seq("A"), eos.clone(), seq("B"), eos],
            "special_tokens": {"<eos>": {"id": "<eos>", "ids": [1], "tokens": ["<eos>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    // A round trip through `tokenizers` checks the document and gives its canonical form
    // (vocabulary ordered by id, whatever the map order above).
    let tokenizer: tokenizers::Tokenizer = doc.to_string().parse().expect("valid word-level tokenizer.json");
    let mut text = tokenizer.to_string(true).expect("serialisable tokenizer");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_first_then_words_in_vocabulary_order() {
        let t: tokenizers::Tokenizer = tokenizer_json().parse().unwrap();
        for (id, s) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(t.token_to_id(s), Some(id as u32));
        }
        for (i, w) in super::super::vocabulary().iter().enumerate() {
            assert_eq!(t.token_to_id(w), Some(4 + i as u32), "{w}");
        }
        assert_eq!(t.get_vocab_size(true), vocab_size());
        let enc = t.encode("The RED ship", true).unwrap();
        assert_eq!(enc.get_tokens(), ["the", "red", "ship", "<eos>"]);
        assert_eq!(t.encode("the zeppelin", true).unwrap().get_ids()[1], 3);
    }
}
