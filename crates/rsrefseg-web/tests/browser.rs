//! Browser tests (headless Chromium with WebGPU on SwiftShader):
//! `cargo test -p rsrefseg-web --target wasm32-unknown-unknown` — see tools/test-all.sh.
//!
//! All tests of this file run in one page, so WebGPU is set up once (`ensure_webgpu` is
//! idempotent) and every test that needs it calls it first.

#![cfg(target_arch = "wasm32")]

use burn::backend::wgpu::WgpuDevice;
use burn::backend::WebGpu;
use rsrefseg_web::{ensure_webgpu, matmul, reference_matmul};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect()
}

/// A small matmul with awkward sizes on WebGPU and on the CPU backend (Flex) agrees with plain Rust.
#[wasm_bindgen_test]
async fn matmul_webgpu_matches_cpu() {
    let mkn = [33, 47, 29];
    let a = values(mkn[0] * mkn[1], 1);
    let b = values(mkn[1] * mkn[2], 2);
    let expected = reference_matmul(&a, &b, mkn);

    let cpu = matmul::<rsrefseg_web::CpuBackend>(&burn_flex::FlexDevice, &a, &b, mkn).await;
    assert!(max_abs_diff(&cpu, &expected) < 1e-4, "the CPU backend differs from the reference");

    assert!(
        ensure_webgpu().await.expect("asking for a WebGPU adapter"),
        "no WebGPU adapter: Chromium needs --enable-unsafe-webgpu (see webdriver.json)"
    );
    let gpu = matmul::<WebGpu>(&WgpuDevice::default(), &a, &b, mkn).await;
    let diff = max_abs_diff(&gpu, &cpu);
    assert!(diff < 1e-3, "WebGPU differs from the CPU backend by {diff}");
}

/// The exported API: `init` picks a backend and `smokeTest` computes on it.
#[wasm_bindgen_test]
async fn init_and_smoke_test_on_both_backends() {
    assert_eq!(rsrefseg_web::version(), env!("CARGO_PKG_VERSION"));
    let expected = rsrefseg_web::smoke_test_expected();
    for requested in ["cpu", "webgpu"] {
        let used = rsrefseg_web::init(requested.to_string()).await.expect("init");
        assert_eq!(used, requested, "backend selected for {requested}");
        let sum = rsrefseg_web::smoke_test().await.expect("smoke test");
        assert!(
            (sum - expected).abs() < 1e-2 * expected.abs().max(1.0),
            "{requested}: smoke test sum {sum}, expected {expected}"
        );
    }
    assert!(rsrefseg_web::init("tpu".to_string()).await.is_err());
}
