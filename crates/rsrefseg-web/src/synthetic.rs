//! A deterministic nano model with generated weights, and a fixed small test input.
//!
//! The weights come from a counter-based generator keyed by each parameter's canonical name, so
//! they are the same on every platform and backend (burn's own random initialisation differs
//! between backends). They are not trained: the model computes a well-conditioned but
//! meaningless mask. Used by the browser tests of the exported API and by the page for
//! development (`?model=synthetic`); the parity tests run the shipped bundle.

use rsrefseg::checkpoint::{param_specs, HostTensor, TensorMap};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::export::quantize::fnv1a64;
use rsrefseg::train::SplitMix64;
use rsrefseg::pre::RgbImage;
use std::collections::BTreeSet;

/// The configuration of the synthetic model: the `nano` preset.
pub fn config() -> RsRefSegConfig {
    RsRefSegConfig::nano()
}

/// The nano tokenizer (`models/nano/tokenizer.json`, generated from the synthetic grammar).
pub fn tokenizer_json() -> String {
    rsrefseg::synth::tokenizer::tokenizer_json()
}

/// Generated weights for every parameter of `config`'s model, in canonical names, and the names
/// of the `Linear` weights among them.
pub fn tensors(config: &RsRefSegConfig, seed: u64) -> Result<(TensorMap, BTreeSet<String>), String> {
    // Only the parameter names and shapes are taken from this instance.
    let model = config.init::<crate::CpuBackend>(&burn_flex::FlexDevice)?;
    let mut out = TensorMap::new();
    let mut linear = BTreeSet::new();
    for spec in param_specs::<crate::CpuBackend, _>(&model) {
        let data = values(&spec.name, &spec.shape, seed);
        if spec.transposed {
            linear.insert(spec.name.clone());
        }
        out.insert(spec.name, HostTensor::new(spec.shape, data));
    }
    Ok((out, linear))
}

/// A model bundle (the `.rsb` format of `rsrefseg export-web`, default options: `Linear` weights
/// q8 in blocks of 32) of the synthetic nano model.
pub fn bundle_bytes(seed: u64) -> Result<Vec<u8>, String> {
    let config = config();
    let (tensors, linear) = tensors(&config, seed)?;
    crate::bundle::bundle_bytes(&config, &tokenizer_json(), tensors, linear)
}

/// Values of one parameter: norm weights and running variances near 1, biases and running
/// means near 0, `logit_scale`/`logit_bias` as a
/// trained SigLIP has them (scale e^2.3 ≈ 10, bias −1), everything else uniform with variance
/// 1 / fan-in (fan-in = product of the trailing dimensions of the PyTorch-layout shape).
fn values(name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut rng = SplitMix64(fnv1a64(name.as_bytes()) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let (offset, scale) = match leaf {
        "logit_scale" => (2.3, 0.0),
        "logit_bias" => (-1.0, 0.0),
        "bias" | "beta" | "running_mean" => (0.0, 0.02),
        "running_var" => (1.0, 0.1),
        "weight" | "gamma" if shape.len() == 1 => (1.0, 0.1),
        _ => {
            let fan_in: usize = if shape.len() > 1 { shape[1..].iter().product() } else { shape[0] };
            (0.0, (3.0 / fan_in.max(1) as f64).sqrt())
        }
    };
    (0..n).map(|_| (offset + scale * uniform(&mut rng)) as f32).collect()
}

/// Uniform in [-1, 1).
fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// The fixed test scene: `height × width` pixels, a bright square on a darker textured ground
/// with a gradient, deterministic.
pub fn test_image(height: usize, width: usize) -> RgbImage {
    let mut data = Vec::with_capacity(height * width * 3);
    for y in 0..height {
        for x in 0..width {
            let inside = (height / 4..height / 2).contains(&y) && (width / 3..2 * width / 3).contains(&x);
            let t = ((x * 7 + y * 13) % 17) as u8;
            let px = if inside {
                [230 - t, 225 - t, 210]
            } else {
                [60 + (x * 100 / width) as u8 + t, 90 + t, 50 + (y * 80 / height) as u8]
            };
            data.extend_from_slice(&px);
        }
    }
    RgbImage::new(height, width, data).expect("test image")
}

/// Seed of the synthetic weights used by the tests.
pub const TEST_SEED: u64 = 3;
