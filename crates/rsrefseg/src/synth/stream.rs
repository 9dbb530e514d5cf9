//! Unlimited training data: scene `i` of a seeded stream is generated when a batch asks for it.
//!
//! The staged nano recipe ([`crate::train::stages`]) never revisits a scene, so more steps
//! never means over-fitting; the stream is a pure function of `(seed, index)`, so a resumed run
//! sees exactly the scenes an uninterrupted one would. Held-out sets are written to disk with
//! other seeds by `rsrefseg synth` and never drawn from a training stream.

use super::expressions::Expression;
use super::scene::{Scene, SceneObject};
use super::writer::scene_with_expressions;
use super::SynthConfig;

/// A seeded, endless sequence of scenes with their referring expressions.
#[derive(Clone, Debug)]
pub struct SceneStream {
    pub config: SynthConfig,
    pub seed: u64,
}

/// One scene of a stream with its expressions (each picks out exactly one object).
#[derive(Clone, Debug)]
pub struct StreamSample {
    pub scene: Scene,
    pub expressions: Vec<Expression>,
}

impl SceneStream {
    /// A stream of the benchmark's scenes (`SynthConfig::default()` at `image_size`) with up to
    /// `expressions_per_scene` expressions each.
    pub fn new(seed: u64, image_size: usize, expressions_per_scene: usize) -> Self {
        let config = SynthConfig { image_size, expressions_per_scene, ..SynthConfig::default() };
        Self { config, seed }
    }

    /// The same stream with the ranking forms (ordinals, superlatives) weighted `w` against the
    /// other simple forms ([`SynthConfig::ranking_weight`]); 1 is the benchmark's mix.
    pub fn with_ranking_weight(mut self, w: f32) -> Self {
        self.config.ranking_weight = w;
        self
    }

    /// Scene `index` (the same whatever was asked before).
    pub fn sample(&self, index: u64) -> StreamSample {
        let (scene, expressions) = scene_with_expressions(&self.config, self.seed, index);
        StreamSample { scene, expressions }
    }

    /// Scenes `start .. start + n`.
    pub fn batch(&self, start: u64, n: usize) -> Vec<StreamSample> {
        (start..start + n as u64).map(|i| self.sample(i)).collect()
    }
}

/// The scene as the model's `x01` input, channel-major `[3, S, S]` in `[0, 1]` (the scene is
/// generated at the model's side, so nothing is resized or padded).
pub fn scene_x01(scene: &Scene) -> Vec<f32> {
    let (h, w) = (scene.height, scene.width);
    let mut chw = vec![0f32; 3 * h * w];
    for (p, px) in scene.image.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * h * w + p] = px[c] as f32 / 255.0;
        }
    }
    chw
}

/// Fraction of each `cell × cell` block covered by the object's mask, row-major
/// `[(H / cell) · (W / cell)]` (area pooling; `cell` must divide the sides).
pub fn cell_coverage(object: &SceneObject, height: usize, width: usize, cell: usize) -> Vec<f32> {
    let (gh, gw) = (height / cell, width / cell);
    let mut out = vec![0f32; gh * gw];
    for y in 0..gh * cell {
        for x in 0..gw * cell {
            if object.mask[y * width + x] != 0 {
                out[(y / cell) * gw + x / cell] += 1.0;
            }
        }
    }
    let area = (cell * cell) as f32;
    out.iter_mut().for_each(|v| *v /= area);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_a_function_of_seed_and_index() {
        let s = SceneStream::new(7, 128, 4);
        let a = s.sample(3);
        let b = s.batch(2, 3);
        assert_eq!(a.scene, b[1].scene);
        assert_eq!(a.expressions, b[1].expressions);
        assert_ne!(s.sample(4).scene.image, a.scene.image);
        assert_ne!(SceneStream::new(8, 128, 4).sample(3).scene.image, a.scene.image);
    }

    /// Weight 1 is the benchmark's mix (the writer's scenes); a larger weight writes more ranking
    /// forms, each still naming exactly its target.
    #[test]
    fn ranking_weight_shifts_the_mix_of_forms() {
        let count = |w: f32| {
            let s = SceneStream::new(5, 256, 6).with_ranking_weight(w);
            let (mut ranking, mut total) = (0, 0);
            for i in 0..60 {
                let sample = s.sample(i);
                for e in &sample.expressions {
                    assert_eq!(super::super::resolve(&e.expr, &sample.scene), Some(vec![e.target]), "{}", e.sent);
                    ranking += matches!(e.expr.kind(), "ordinal" | "superlative") as usize;
                    total += 1;
                }
            }
            ranking as f64 / total as f64
        };
        let base = SceneStream::new(5, 256, 6);
        let config = base.config.clone();
        for i in 0..5 {
            let (scene, exprs) = super::super::writer::scene_with_expressions(&config, 5, i);
            let s = base.sample(i);
            assert_eq!(scene.image, s.scene.image);
            assert_eq!(exprs.iter().map(|e| &e.sent).collect::<Vec<_>>(), s.expressions.iter().map(|e| &e.sent).collect::<Vec<_>>());
        }
        let (one, three) = (count(1.0), count(3.0));
        assert!(three > one + 0.04, "ranking forms: {one:.3} at weight 1, {three:.3} at weight 3");
    }

    #[test]
    fn coverage_sums_to_the_area() {
        let s = SceneStream::new(1, 128, 4).sample(0);
        let o = &s.scene.objects[0];
        let cov = cell_coverage(o, 128, 128, 8);
        assert_eq!(cov.len(), 16 * 16);
        let total: f32 = cov.iter().sum::<f32>() * 64.0;
        assert!((total - o.area as f32).abs() < 0.5, "{total} vs {}", o.area);
        assert!(cov.iter().all(|&v| (0.0..=1.0).contains(&v)));
        let x = scene_x01(&s.scene);
        assert_eq!(x.len(), 3 * 128 * 128);
        assert_eq!(x[0], s.scene.image[0] as f32 / 255.0);
        assert_eq!(x[128 * 128], s.scene.image[1] as f32 / 255.0);
    }
}
