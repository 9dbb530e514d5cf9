//! # rsrefseg-web — the browser front end
//!
//! A `wasm-bindgen` API over the [`rsrefseg`] model crate, run by the page's Web Worker
//! (`web/worker.js`; the page's UI thread never runs the model). The segmentation itself is the
//! model crate's pipeline ([`rsrefseg::segmenter`], the one the command line tool runs): this
//! crate loads bundles, picks the backend and turns its results into JavaScript objects. Compute runs on burn's WebGPU
//! backend when the browser offers an adapter and on burn's Flex CPU backend ([`CpuBackend`]) otherwise.
//!
//! | module | what |
//! | --- | --- |
//! | [`messages`] | the worker API's inputs and results (serde structs), the protocol in one place |
//! | [`bundle`] | model bundle bytes → configuration, tokenizer and model on a backend |
//! | [`synthetic`] | a deterministic nano model with generated weights (tests, development) |
//! | `backend` (wasm) | WebGPU / CPU selection, self-check |
//! | `session` (wasm) | the loaded model: `loadModel`, `loadModelUrl` (streamed download with progress) |
//! | `api` (wasm) | `setImage`, `segment` |
//! | `js` (wasm) | JavaScript conversions, errors, the panic hook |
//!
//! Rules that keep burn working in a browser (see README):
//! - the WebGPU device is initialised **once**, asynchronously, before any tensor op (`init`);
//! - results are read only with `into_data_async().await` — synchronous reads panic;
//! - burn is built without `autotune`;
//! - bicubic resizes never run on WebGPU (pre-processing is done on the host).
//!
//! On non-wasm targets only the backend-generic part is built (host tests write the reference
//! values the browser tests compare against).

/// The CPU backend of the page's fallback (and of the host tests that write its reference
/// values): burn's Flex, the same CPU backend as the command line tool's default. In the browser
/// it runs on one thread with wasm SIMD128 (`.cargo/config.toml` enables it for wasm32).
pub type CpuBackend = burn_flex::Flex;

pub mod bundle;
pub mod messages;
pub mod synthetic;

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod backend;
#[cfg(target_arch = "wasm32")]
mod js;
#[cfg(target_arch = "wasm32")]
mod session;

#[cfg(target_arch = "wasm32")]
pub use api::{segment, set_image};
#[cfg(target_arch = "wasm32")]
pub use backend::{
    backend, ensure_webgpu, has_webgpu_adapter, init, matmul, matmul_on, reference_matmul, selected,
    smoke_test, smoke_test_expected, BackendKind,
};
#[cfg(target_arch = "wasm32")]
pub use session::{load_model, load_model_url, load_synthetic_model, model_info, model_loaded};

/// The crate version, e.g. `"0.1.0"`.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen::prelude::wasm_bindgen)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
