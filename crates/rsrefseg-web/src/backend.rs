//! Backend selection: burn's WebGPU backend when the browser offers an adapter, the Flex CPU
//! backend otherwise, and a tiny self-check on the chosen one.
//!
//! WebGPU is initialised **once** per page or worker, asynchronously, before any tensor op; a
//! second initialisation or an op before it panics in burn, so [`ensure_webgpu`] remembers it.

use std::cell::Cell;

use burn::backend::wgpu::{graphics::WebGpu as WebGpuApi, RuntimeOptions, WgpuDevice};
use burn::backend::WebGpu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The backend the page computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// burn's wgpu backend on the browser's WebGPU.
    WebGpu,
    /// burn's Flex backend on the CPU ([`crate::CpuBackend`]; one thread, wasm SIMD128).
    Cpu,
}

impl BackendKind {
    /// The name used by the JavaScript API: `"webgpu"` or `"cpu"`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::WebGpu => "webgpu",
            BackendKind::Cpu => "cpu",
        }
    }
}

thread_local! {
    /// Backend chosen by the last successful [`init`].
    static SELECTED: Cell<Option<BackendKind>> = const { Cell::new(None) };
    /// Whether the WebGPU runtime was set up in this page/worker (it can be set up only once).
    static WEBGPU_READY: Cell<bool> = const { Cell::new(false) };
}

/// Select the compute backend: `"webgpu"` (falls back to the CPU when the browser has no
/// WebGPU adapter) or `"cpu"`. Resolves to the backend actually used (`"webgpu"` or `"cpu"`).
/// May be called again; WebGPU is set up only the first time it is chosen.
#[wasm_bindgen]
pub async fn init(backend: String) -> Result<String, JsValue> {
    crate::js::install_panic_hook();
    let kind = match backend.as_str() {
        "webgpu" | "gpu" => {
            if ensure_webgpu().await? {
                BackendKind::WebGpu
            } else {
                web_sys::console::warn_1(&"rsrefseg: no WebGPU adapter, using the CPU".into());
                BackendKind::Cpu
            }
        }
        "cpu" | "ndarray" => BackendKind::Cpu,
        other => {
            return Err(JsValue::from_str(&format!(
                "unknown backend {other:?} (expected \"webgpu\" or \"cpu\")"
            )))
        }
    };
    SELECTED.with(|s| s.set(Some(kind)));
    Ok(kind.name().to_string())
}

/// The backend chosen by [`init`] (`"webgpu"`, `"cpu"`), or `undefined` before it.
#[wasm_bindgen]
pub fn backend() -> Option<String> {
    selected().map(|k| k.name().to_string())
}

/// A small self-check on the selected backend: the sum of a 64×64 matmul of known matrices.
/// Resolves to the sum (it should equal [`smoke_test_expected`]).
#[wasm_bindgen(js_name = smokeTest)]
pub async fn smoke_test() -> Result<f64, JsValue> {
    let kind = selected().ok_or_else(|| JsValue::from_str("call init() first"))?;
    let n = 64;
    let (a, b) = (smoke_matrix(n, 1), smoke_matrix(n, 2));
    let out = matmul_on(kind, &a, &b, [n, n, n]).await;
    Ok(out.iter().map(|&v| v as f64).sum())
}

/// The value [`smoke_test`] should resolve to, computed in plain Rust.
#[wasm_bindgen(js_name = smokeTestExpected)]
pub fn smoke_test_expected() -> f64 {
    let n = 64;
    reference_matmul(&smoke_matrix(n, 1), &smoke_matrix(n, 2), [n, n, n])
        .iter()
        .map(|&v| v as f64)
        .sum()
}

/// The backend chosen by [`init`], if any.
pub fn selected() -> Option<BackendKind> {
    SELECTED.with(|s| s.get())
}

/// Set up burn's WebGPU runtime once. Returns `Ok(false)` when the browser offers no adapter
/// (asked through `navigator.gpu.requestAdapter()` first, because burn panics instead of
/// returning an error when there is none).
pub async fn ensure_webgpu() -> Result<bool, JsValue> {
    if WEBGPU_READY.with(|r| r.get()) {
        return Ok(true);
    }
    if !has_webgpu_adapter().await? {
        return Ok(false);
    }
    burn::backend::wgpu::init_setup_async::<WebGpuApi>(
        &WgpuDevice::default(),
        RuntimeOptions::default(),
    )
    .await;
    WEBGPU_READY.with(|r| r.set(true));
    Ok(true)
}

/// Whether `navigator.gpu.requestAdapter()` yields an adapter (works in windows and workers).
pub async fn has_webgpu_adapter() -> Result<bool, JsValue> {
    let global = js_sys::global();
    let navigator = Reflect::get(&global, &"navigator".into())?;
    if navigator.is_undefined() || navigator.is_null() {
        return Ok(false);
    }
    let gpu = Reflect::get(&navigator, &"gpu".into())?;
    if gpu.is_undefined() || gpu.is_null() {
        return Ok(false);
    }
    let request: Function = Reflect::get(&gpu, &"requestAdapter".into())?.dyn_into()?;
    let promise: Promise = request.call0(&gpu)?.dyn_into()?;
    let adapter = JsFuture::from(promise).await?;
    Ok(!adapter.is_null() && !adapter.is_undefined())
}

/// `a [m,k] × b [k,n]` on the given backend, read back asynchronously. For WebGPU, [`init`] /
/// [`ensure_webgpu`] must have succeeded first.
pub async fn matmul_on(kind: BackendKind, a: &[f32], b: &[f32], mkn: [usize; 3]) -> Vec<f32> {
    match kind {
        BackendKind::WebGpu => matmul::<WebGpu>(&WgpuDevice::default(), a, b, mkn).await,
        BackendKind::Cpu => matmul::<crate::CpuBackend>(&burn_flex::FlexDevice, a, b, mkn).await,
    }
}

/// `a [m,k] × b [k,n]` on backend `B`, read back with `into_data_async`.
pub async fn matmul<B: Backend>(
    device: &B::Device,
    a: &[f32],
    b: &[f32],
    [m, k, n]: [usize; 3],
) -> Vec<f32> {
    let a = Tensor::<B, 2>::from_data(TensorData::new(a.to_vec(), [m, k]), device);
    let b = Tensor::<B, 2>::from_data(TensorData::new(b.to_vec(), [k, n]), device);
    a.matmul(b)
        .into_data_async()
        .await
        .expect("reading the matmul result")
        .to_vec::<f32>()
        .expect("matmul result as f32")
}

/// Plain-Rust matmul used as the reference in self-checks.
pub fn reference_matmul(a: &[f32], b: &[f32], [m, k, n]: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p];
            for j in 0..n {
                out[i * n + j] += av * b[p * n + j];
            }
        }
    }
    out
}

/// A deterministic `n×n` test matrix with entries in [-1, 1).
fn smoke_matrix(n: usize, seed: usize) -> Vec<f32> {
    (0..n * n)
        .map(|i| (((i * 7919 + seed * 104_729) % 2000) as f32) / 1000.0 - 1.0)
        .collect()
}
