//! Property tests over every parser of untrusted bytes: safetensors, torch zip + pickle VM (and
//! the plain-pickle reader of RRSIS-D refs), web bundles, RLE strings and JSONL lines, the model
//! configuration JSON, image decoding and the tokenizer. Inputs are random bytes and random
//! damage (flipped bytes, truncation, inserted runs) of a valid file of each format.
//!
//! Each case must end in `Ok` or an error — never a panic — and allocate at most a stated bound
//! on the calling thread: a counting allocator records the peak bytes live during the parse
//! (`PEAK_SLACK` plus a multiple of the input size, below every limit the README states).
//!
//! Bounded to a few seconds each in CI (`PROPTEST_CASES` raises the count for longer runs).

use proptest::prelude::*;
use rsrefseg::checkpoint::{safetensors_file, torch_zip};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::data::jsonl;
use rsrefseg::data::rle::Rle;
use rsrefseg::encoders::TextTokenizer;
use rsrefseg::export::bundle::Bundle;
use rsrefseg::pre::RgbImage;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Allocation accounting per thread (the test harness runs tests on several threads).

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        // A block freed on another thread than it was allocated on can make this thread's count
        // dip below zero; saturate.
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(layout.size())));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(layout.size())));
            grow(new_size);
        }
        p
    }
}

fn grow(n: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocation allowed on top of `PEAK_FACTOR` × the input: parser tables, the tokenizer's
/// vocabulary, error messages.
const PEAK_SLACK: usize = 64 << 20;
/// Decoders may hold the input, a decompressed copy and decoded f32 values.
const PEAK_FACTOR: usize = 16;

/// Run `parse` on `input`, returning the peak bytes it had live beyond what was live before.
fn peak_during<T>(input: &[u8], parse: impl FnOnce(&[u8]) -> T) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = parse(input);
    drop(out);
    PEAK.with(Cell::get).saturating_sub(base)
}

fn check_bounded<T>(input: &[u8], parse: impl FnOnce(&[u8]) -> T) -> Result<(), TestCaseError> {
    check_bounded_by(input, PEAK_SLACK + PEAK_FACTOR * input.len(), parse)
}

fn check_bounded_by<T>(input: &[u8], bound: usize, parse: impl FnOnce(&[u8]) -> T) -> Result<(), TestCaseError> {
    let peak = peak_during(input, parse);
    prop_assert!(peak <= bound, "{peak} bytes allocated for a {}-byte input (bound {bound})", input.len());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Seeds and damage

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seed(rel: &str) -> &'static [u8] {
    static CACHE: OnceLock<std::sync::Mutex<std::collections::HashMap<String, &'static [u8]>>> = OnceLock::new();
    let mut m = CACHE.get_or_init(Default::default).lock().unwrap();
    m.entry(rel.to_string())
        .or_insert_with(|| Box::leak(std::fs::read(root().join(rel)).unwrap().into_boxed_slice()))
}

/// A damaged copy of `base`: up to 8 edits, each a flipped byte, a truncation, or a run of
/// random bytes written over the data (often a length or an offset field).
fn damaged(base: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len().max(1);
    prop::collection::vec((0..3u8, 0..n, any::<u8>(), 1..16usize), 1..8).prop_map(move |edits| {
        let mut v = base.to_vec();
        for (kind, at, byte, len) in edits {
            if v.is_empty() {
                break;
            }
            let at = at % v.len();
            match kind {
                0 => v[at] ^= byte | 1,
                1 => v.truncate(at),
                _ => {
                    for i in at..(at + len).min(v.len()) {
                        v[i] = byte.wrapping_mul(i as u8 | 1);
                    }
                }
            }
        }
        v
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(96))]

    #[test]
    fn safetensors_never_panics(b in prop_oneof![bytes(), damaged(seed("tests/fixtures/sam2_tiny/sam2_tiny_hf.safetensors"))]) {
        check_bounded(&b, |b| safetensors_file::read(b, "fuzz.safetensors").map(|m| m.len()))?;
    }

    #[test]
    fn torch_zip_never_panics(b in prop_oneof![bytes(), damaged(seed("tests/fixtures/torch_zip/model.pt")), damaged(seed("tests/fixtures/torch_zip/nested.pt"))]) {
        check_bounded(&b, |b| torch_zip::read(b, "fuzz.pt").map(|m| m.len()))?;
    }

    #[test]
    fn plain_pickle_never_panics(b in prop_oneof![bytes(), damaged(seed("tests/fixtures/data_rrsisd_refs_p2.p")), damaged(seed("tests/fixtures/data_rrsisd_refs_p0.p"))]) {
        check_bounded(&b, |b| torch_zip::read_plain_pickle(b).is_ok())?;
    }

    #[test]
    fn config_json_never_panics(b in prop_oneof![bytes(), damaged(seed("tests/fixtures/sam2_tiny/config.json"))], preset in 0..2usize) {
        // Damaged presets (valid JSON with odd values) reach the validator, random text the parser.
        let json = if preset == 0 {
            String::from_utf8_lossy(&b).into_owned()
        } else {
            let mut v = serde_json::to_value(RsRefSegConfig::nano()).unwrap();
            let n = b.first().copied().unwrap_or(0) as i64 - 64;
            if let Some(s) = v.pointer_mut("/siglip/vision_config/num_attention_heads") { *s = n.into(); }
            if let Some(s) = v.pointer_mut("/prompter/grid") { *s = (n * 3).into(); }
            v.to_string()
        };
        check_bounded(json.as_bytes(), |j| RsRefSegConfig::from_json(std::str::from_utf8(j).unwrap()).is_ok())?;
    }

    #[test]
    fn image_decode_never_panics(b in prop_oneof![bytes(), damaged(seed("../../web/samples/synth-tanks.png"))]) {
        // A damaged header may claim any size up to the stated limit (`MAX_IMAGE_PIXELS`), which
        // the decoder then allocates (RGBA at most, plus the RGB copy) before it finds the data short.
        let bound = PEAK_SLACK + PEAK_FACTOR * b.len() + 7 * rsrefseg::pre::MAX_IMAGE_PIXELS as usize;
        check_bounded_by(&b, bound, |b| RgbImage::decode(b).map(|i| i.width))?;
    }

    #[test]
    fn rle_and_jsonl_never_panic(s in ".{0,200}", h in 0usize..300, w in 0usize..300) {
        let _ = Rle::from_string(&s, h, w).map(|r| r.decode());
        let line = format!(r#"{{"split":"train","image_id":1,"sent":"x","file_name":"a.png","segmentation":{{"size":[{h},{w}],"counts":{}}}}}"#, serde_json::Value::String(s.clone()));
        check_bounded(line.as_bytes(), |l| jsonl::parse_line(std::str::from_utf8(l).unwrap()).and_then(|r| r.rle()).map(|r| r.decode().data.len()))?;
        let _ = jsonl::parse_line(&s);
    }

    #[test]
    fn tokenizer_never_panics(s in "\\PC{0,300}") {
        let json = seed("../../models/nano/tokenizer.json");
        let t = TextTokenizer::from_bytes(json, RsRefSegConfig::nano().tokenizer).unwrap();
        let _ = t.encode_one(&s);
        let _ = t.vocabulary_note(&s);
        let _ = t.encode_batch(&[s.as_str(), "the ship"]);
    }
}

proptest! {
    // The bundle is 6.9 MB (checksummed): fewer cases.
    #![proptest_config(cases(12))]

    #[test]
    fn bundle_never_panics(b in prop_oneof![bytes(), damaged(seed("../../models/nano/nano.rsb"))]) {
        check_bounded(&b, |b| Bundle::from_bytes(b.to_vec()).is_ok())?;
    }
}
