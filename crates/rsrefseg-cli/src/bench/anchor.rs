//! The PyTorch-eager CPU anchor (`shared/docs/performance-anchor.md`): the authors' code on the
//! same kind of 2-core machine, fp32, 2 threads, batch 1, random weights, median of 5 runs, at the
//! `browser` sizes. Copied here so that every benchmark run prints its reference beside it.

/// One row of the anchor table.
#[derive(Clone, Copy, Debug)]
pub struct AnchorRow {
    pub gmac: f64,
    pub median_ms: f64,
    pub gflops: f64,
}

/// The anchor's row for a stage, when it measured one (`text_len` selects the text rows).
pub fn anchor(stage: &str, text_len: usize) -> Option<AnchorRow> {
    let row = |gmac, median_ms, gflops| Some(AnchorRow { gmac, median_ms, gflops });
    match (stage, text_len) {
        ("siglip-vision", _) => row(108.1, 1175.0, 184.0),
        ("siglip-text", 16) => row(1.4, 35.0, 78.0),
        ("siglip-text", 64) => row(5.5, 75.0, 147.0),
        ("hiera-fpn", _) => row(146.2, 1941.0, 151.0),
        ("prompter", _) => row(13.8, 288.0, 95.0),
        ("decoder", _) => row(1.9, 47.0, 81.0),
        _ => None,
    }
}

/// The anchor's whole-pipeline times, printed under the table for context.
pub const FULL_PIPELINE_MS: f64 = 3507.0;
pub const REQUERY_MS: f64 = 366.0;
/// The project's target: at most this fraction of the anchor's time.
pub const TARGET_RATIO: f64 = 0.7;
