//! Synthetic referring-segmentation benchmark: aerial-looking scenes, referring expressions and
//! the dataset files the trainer reads (reference §8.1).
//!
//! No public RS referring dataset or pretrained weight can be fetched by this project, so the
//! small shipped model is trained and evaluated on data generated here:
//!
//! - [`scene`]: ground textures (fields, grass, water, roads, urban blocks, tarmac) and the
//!   placement and rasterisation of objects with exact per-object masks;
//! - [`objects`]: categories, colour names, sizes and the top-down shapes of each category;
//! - [`expressions`]: the expression grammar, its semantics evaluated against a scene (each
//!   expression must pick out exactly its target) and the `simple` / `relational` tag;
//! - [`large`]: whole scenes (a canvas of many cells) for the tiled pipeline;
//! - [`writer`]: PNG images plus `{train,val,test}.jsonl` with compressed COCO RLE masks.
//!
//! Everything is a pure function of `(seed, scene index)`: scene `i` is the same whatever the
//! number of scenes requested, and the same seed gives byte-identical files.

pub mod expressions;
pub mod large;
pub mod objects;
pub mod scene;
pub mod stream;
pub mod tokenizer;
pub mod writer;

pub use expressions::{generate_expressions, resolve, vocabulary, Expression, Tag};
pub use objects::{Category, Colour};
pub use scene::{generate_scene, Scene, SceneObject};
pub use stream::{SceneStream, StreamSample};
pub use writer::{write_dataset, DatasetSummary};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Generator settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Image side in pixels (square images). Object sizes are drawn for 256 and scaled with it.
    pub image_size: usize,
    /// Fewest objects placed in a scene (fewer only if placement keeps failing).
    pub min_objects: usize,
    /// Most objects placed in a scene.
    pub max_objects: usize,
    /// Referring expressions written per scene (fewer when the scene allows fewer).
    pub expressions_per_scene: usize,
    /// Fractions of scenes in the validation and test splits (the rest is train).
    pub val_fraction: f32,
    pub test_fraction: f32,
    /// Preference weight of the simple forms that rank a target among its kind (ordinals, "the
    /// largest …") relative to the other forms: 1 writes the benchmark's mix. Training streams
    /// may raise it, as these forms are the ones a small model learns last; held-out and test
    /// sets keep 1.
    pub ranking_weight: f32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            image_size: 256,
            min_objects: 2,
            max_objects: 8,
            expressions_per_scene: 4,
            val_fraction: 0.1,
            test_fraction: 0.1,
            ranking_weight: 1.0,
        }
    }
}

/// The random source of the generator.
///
/// ChaCha8 gives the bits; ranges and floats are derived here from `next_u64` rather than through
/// `rand`'s distributions, whose algorithms have changed between releases: a dataset must stay
/// byte-identical for a given seed whatever `rand` version the tree resolves to.
pub struct SynthRng(ChaCha8Rng);

impl SynthRng {
    /// The stream of scene `index` under `seed`; independent of how many scenes are generated.
    pub fn for_scene(seed: u64, index: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        SynthRng(rng)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)` with 24 bits, exact in f32.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `[lo, hi)` (`hi > lo`); the multiply-shift keeps the bias below 2⁻³².
    pub fn below(&mut self, lo: usize, hi: usize) -> usize {
        assert!(hi > lo, "empty range {lo}..{hi}");
        let span = (hi - lo) as u64;
        lo + (((self.next_u64() >> 32) * span) >> 32) as usize
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(0, items.len())]
    }

    /// Index drawn with probability proportional to `weights` (not all zero).
    pub fn weighted(&mut self, weights: &[f32]) -> usize {
        let total: f32 = weights.iter().sum();
        let mut r = self.unit() * total;
        for (i, &w) in weights.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(0, i + 1);
            items.swap(i, j);
        }
    }
}
