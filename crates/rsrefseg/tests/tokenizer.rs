//! Tokenisation with the real Gemma / SigLIP2 `tokenizer.json` against Python `tokenizers`
//! (cases in tests/fixtures/tokenizer/tokenizer_cases.json).

use rsrefseg::encoders::tokenizer::{Padding, PaddingSide, SpecialTokens, TextError};
use rsrefseg::encoders::{TextTokenizer, TokenizerConfig};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn tokenizer(config: TokenizerConfig) -> TextTokenizer {
    TextTokenizer::from_bytes(&std::fs::read(dir().join("tokenizer.json")).unwrap(), config).unwrap()
}

fn cases() -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("tokenizer_cases.json")).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn matches_python_tokenizers_with_and_without_special_tokens() {
    let with = tokenizer(TokenizerConfig { max_length: 4096, ..TokenizerConfig::rsrefseg2() });
    let without = tokenizer(TokenizerConfig {
        special_tokens: SpecialTokens::Explicit { bos: false, eos: false },
        max_length: 4096,
        ..TokenizerConfig::rsrefseg2()
    });
    let mut checked = 0;
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        if text.trim().is_empty() || text.trim() != text {
            continue; // empty text is an error here (see below); surrounding spaces are trimmed
        }
        assert_eq!(with.encode_one(text).unwrap(), ids(&case["ids"]), "{text:?}");
        assert_eq!(without.encode_one(text).unwrap(), ids(&case["ids_no_special"]), "{text:?}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} cases checked");
}

#[test]
fn siglip2_policy_lowercases_appends_eos_and_pads_to_64() {
    let t = tokenizer(TokenizerConfig::siglip2_pretraining());
    let batch = t.encode_batch(&["The RED car", "a ship"]).unwrap();
    assert_eq!(batch.len(), 64);
    let plain = tokenizer(TokenizerConfig {
        special_tokens: SpecialTokens::Explicit { bos: false, eos: false },
        ..TokenizerConfig::rsrefseg2()
    });
    let lower = plain.encode_one("the red car").unwrap();
    assert_eq!(&batch.input_ids[0][..lower.len()], lower.as_slice());
    assert_eq!(batch.input_ids[0][lower.len()], 1, "EOS after the text");
    assert_eq!(batch.input_ids[0][lower.len() + 1], 0, "then <pad>");
    assert_eq!(batch.attention_mask[0].iter().sum::<u32>() as usize, lower.len() + 1);
}

#[test]
fn left_padding_puts_the_last_token_last() {
    let t = tokenizer(TokenizerConfig { padding_side: PaddingSide::Left, ..TokenizerConfig::rsrefseg2() });
    let b = t.encode_batch(&["a ship", "the large white storage tank"]).unwrap();
    assert_eq!(b.input_ids[0].len(), b.input_ids[1].len());
    assert_eq!(b.input_ids[0][0], 0);
    assert_eq!(*b.input_ids[0].last().unwrap(), t.encode_one("a ship").unwrap().pop().unwrap());
    let n = TokenizerConfig { padding: Padding::None, ..TokenizerConfig::rsrefseg2() };
    assert_eq!(tokenizer(n).encode_batch(&["a ship", "the large ship"]).unwrap_err(), TextError::UnequalLengths);
}

#[test]
fn empty_and_overlong_text_get_clear_errors() {
    let t = tokenizer(TokenizerConfig::rsrefseg2());
    assert_eq!(t.encode_one("   ").unwrap_err(), TextError::Empty);
    let long = "the white ship ".repeat(40);
    match t.encode_one(&long) {
        Err(TextError::TooLong { tokens, max: 64 }) => assert!(tokens > 64),
        other => panic!("{other:?}"),
    }
    let cut = tokenizer(TokenizerConfig { truncate: true, ..TokenizerConfig::siglip2_pretraining() });
    let ids = cut.encode_one(&long).unwrap();
    assert_eq!(ids.len(), 64);
    assert_eq!(*ids.last().unwrap(), 1, "EOS kept after truncation");
}

/// The shipped nano vocabulary (55 words) reads typos, emoji and other scripts as one unknown
/// token: the user is told which words, and when no word is known at all.
#[test]
fn words_outside_the_vocabulary_are_reported() {
    let json = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/nano/tokenizer.json")).unwrap();
    let nano = TextTokenizer::from_bytes(&json, rsrefseg::config::RsRefSegConfig::nano().tokenizer).unwrap();
    assert_eq!(nano.vocabulary_note("the largest white storage tank"), None);
    let (words, all) = nano.unknown_words("the white shipp 🚢 left");
    assert_eq!((words, all), (vec!["shipp".to_string(), "🚢".to_string()], false));
    let note = nano.vocabulary_note("the white shipp left").unwrap();
    assert!(note.contains("“shipp”") && note.contains("read as unknown"), "{note}");
    let note = nano.vocabulary_note("asdf qwerty 港口").unwrap();
    assert!(note.contains("No word") && note.contains("“asdf”") && note.contains("“港口”"), "{note}");
    // Gemma's byte fallback knows every byte: nothing to report.
    assert_eq!(tokenizer(TokenizerConfig::rsrefseg2()).vocabulary_note("asdf 🚢 港口"), None);
}
