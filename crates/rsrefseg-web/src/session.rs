//! The loaded model of this page or worker: `loadModel`, `loadModelUrl` (streamed download with
//! progress), `loadSyntheticModel`, `modelLoaded`, `modelInfo`.

use crate::backend::{init, selected, BackendKind};
use crate::bundle::load_bundle;
use crate::js::{error, to_js};
use crate::messages::ModelInfo;
use rsrefseg::pre::RgbImage;
use rsrefseg::segmenter::{now_ms, EncodedImage, Segmenter, SentencePrompts};
use rsrefseg::whole_scene::geotiff::GeoReference;
use rsrefseg::whole_scene::{SceneOptions, SceneTokens};
use burn::backend::wgpu::WgpuDevice;
use burn::backend::WebGpu;
use js_sys::{Function, Promise, Reflect, Uint8Array};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// A segmenter on the backend it was loaded on.
pub(crate) enum AnySegmenter {
    Gpu(Segmenter<WebGpu>),
    Cpu(Segmenter<crate::CpuBackend>),
}

/// An encoded image on the backend of the model that encoded it, or a whole scene (kept as
/// pixels: every sentence tiles it).
pub(crate) enum AnyImage {
    Gpu(EncodedImage<WebGpu>),
    Cpu(EncodedImage<crate::CpuBackend>),
    Scene { image: RgbImage, geo: Option<GeoReference>, options: SceneOptions, tokens: RefCell<AnySceneTokens> },
}

/// SigLIP's tile tokens of the current scene, on the backend that made them (kept between
/// sentences: only the first sentence on a scene runs SigLIP on every tile).
#[derive(Default)]
pub(crate) enum AnySceneTokens {
    #[default]
    None,
    Gpu(SceneTokens<WebGpu>),
    Cpu(SceneTokens<crate::CpuBackend>),
}

/// A sentence's cached prompts on the current image (for corrections: decoder only).
pub(crate) enum AnyPrompts {
    Gpu(SentencePrompts<WebGpu>),
    Cpu(SentencePrompts<crate::CpuBackend>),
}

pub(crate) struct Loaded {
    pub seg: AnySegmenter,
    pub kind: BackendKind,
    pub summary: String,
    pub image_size: usize,
    pub max_tokens: usize,
    pub load_ms: f64,
}

thread_local! {
    static MODEL: RefCell<Option<Rc<Loaded>>> = const { RefCell::new(None) };
    static IMAGE: RefCell<Option<Rc<AnyImage>>> = const { RefCell::new(None) };
    /// The last sentence answered on IMAGE and its prompts.
    static PROMPTS: RefCell<Option<(String, Rc<AnyPrompts>)>> = const { RefCell::new(None) };
}

/// The cached prompts of `text` on the current image, if it was the last sentence answered.
pub(crate) fn cached_prompts(text: &str) -> Option<Rc<AnyPrompts>> {
    PROMPTS.with(|p| p.borrow().as_ref().filter(|(t, _)| t == text).map(|(_, p)| p.clone()))
}

pub(crate) fn set_cached_prompts(text: &str, prompts: AnyPrompts) {
    PROMPTS.with(|p| *p.borrow_mut() = Some((text.to_string(), Rc::new(prompts))));
}

pub(crate) fn current_model() -> Result<Rc<Loaded>, JsValue> {
    MODEL
        .with(|m| m.borrow().clone())
        .ok_or_else(|| error("no model loaded: load a model bundle first"))
}

pub(crate) fn current_image() -> Option<Rc<AnyImage>> {
    IMAGE.with(|i| i.borrow().clone())
}

pub(crate) fn set_current_image(image: Option<AnyImage>) {
    IMAGE.with(|i| *i.borrow_mut() = image.map(Rc::new));
    PROMPTS.with(|p| p.borrow_mut().take());
}

/// The backend to load on: the one chosen by `init`, or WebGPU with the CPU fallback.
async fn backend_kind() -> Result<BackendKind, JsValue> {
    if let Some(k) = selected() {
        return Ok(k);
    }
    init("webgpu".into()).await?;
    selected().ok_or_else(|| error("no backend"))
}

fn info(m: &Loaded) -> ModelInfo {
    ModelInfo {
        backend: m.kind.name().into(),
        summary: m.summary.clone(),
        image_size: m.image_size,
        max_tokens: m.max_tokens,
        load_ms: m.load_ms,
        download_ms: None,
        bytes: None,
    }
}

/// Load a model bundle (the bytes of a `.rsb` file) on the selected backend (`init`; WebGPU with
/// the CPU fallback when `init` was not called). Replaces the current model and forgets the
/// current image. Resolves to a [`ModelInfo`] (`{backend, summary, imageSize, maxTokens, loadMs}`).
#[wasm_bindgen(js_name = loadModel)]
pub async fn load_model(bytes: Vec<u8>) -> Result<JsValue, JsValue> {
    to_js(&load(bytes).await?)
}

async fn load(bytes: Vec<u8>) -> Result<ModelInfo, JsValue> {
    crate::js::install_panic_hook();
    let kind = backend_kind().await?;
    let t0 = now_ms();
    // Free the previous model before the new one is uploaded.
    MODEL.with(|m| m.borrow_mut().take());
    set_current_image(None);
    let (seg, config, summary) = match kind {
        BackendKind::WebGpu => {
            let device = WgpuDevice::default();
            let loaded = load_bundle::<WebGpu>(bytes, &device).map_err(error)?;
            let (config, summary) = (loaded.config.clone(), loaded.summary.clone());
            (AnySegmenter::Gpu(loaded.segmenter(device)), config, summary)
        }
        BackendKind::Cpu => {
            let device = burn_flex::FlexDevice;
            let loaded = load_bundle::<crate::CpuBackend>(bytes, &device).map_err(error)?;
            let (config, summary) = (loaded.config.clone(), loaded.summary.clone());
            (AnySegmenter::Cpu(loaded.segmenter(device)), config, summary)
        }
    };
    let loaded = Loaded {
        seg,
        kind,
        summary,
        image_size: config.image_size(),
        max_tokens: config.tokenizer.max_length,
        load_ms: now_ms() - t0,
    };
    let out = info(&loaded);
    MODEL.with(|m| *m.borrow_mut() = Some(Rc::new(loaded)));
    Ok(out)
}

/// Download a model bundle from `url` (streamed; `onProgress(loadedBytes, totalBytes)` is called
/// as chunks arrive, `totalBytes` is 0 when the server does not say) and load it
/// ([`load_model`]). The resolved object also has `downloadMs` and `bytes`.
#[wasm_bindgen(js_name = loadModelUrl)]
pub async fn load_model_url(url: String, on_progress: Option<Function>) -> Result<JsValue, JsValue> {
    let t0 = now_ms();
    let bytes = download(&url, on_progress.as_ref()).await?;
    let download_ms = now_ms() - t0;
    let n = bytes.len();
    let info = load(bytes).await?;
    to_js(&ModelInfo { download_ms: Some(download_ms), bytes: Some(n), ..info })
}

/// Load the synthetic nano model (generated weights, not trained: for development and tests).
#[wasm_bindgen(js_name = loadSyntheticModel)]
pub async fn load_synthetic_model(seed: Option<u32>) -> Result<JsValue, JsValue> {
    let seed = seed.map_or(crate::synthetic::TEST_SEED, u64::from);
    let bytes = crate::synthetic::bundle_bytes(seed).map_err(error)?;
    load_model(bytes).await
}

/// Whether a model is loaded.
#[wasm_bindgen(js_name = modelLoaded)]
pub fn model_loaded() -> bool {
    MODEL.with(|m| m.borrow().is_some())
}

/// The loaded model's [`ModelInfo`], or `undefined`.
#[wasm_bindgen(js_name = modelInfo)]
pub fn model_info() -> JsValue {
    MODEL.with(|m| m.borrow().as_ref().map_or(Ok(JsValue::UNDEFINED), |m| to_js(&info(m)))).unwrap_or(JsValue::UNDEFINED)
}

async fn download(url: &str, on_progress: Option<&Function>) -> Result<Vec<u8>, JsValue> {
    let global = js_sys::global();
    let fetch: Function = Reflect::get(&global, &"fetch".into())?.dyn_into()?;
    let promise: Promise = fetch.call1(&global, &url.into())?.dyn_into()?;
    let response: web_sys::Response = JsFuture::from(promise)
        .await
        .map_err(|e| error(format!("cannot download the model from {url}: {}", describe(&e))))?
        .dyn_into()?;
    if !response.ok() {
        return Err(error(format!(
            "cannot download the model from {url}: HTTP {} {}",
            response.status(),
            response.status_text()
        )));
    }
    let total = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let body = response.body().ok_or_else(|| error(format!("{url}: the response has no body")))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(total.min(crate::bundle::MAX_BUNDLE_BYTES as f64) as usize);
    let progress = |loaded: usize| {
        if let Some(f) = on_progress {
            let _ = f.call2(&JsValue::NULL, &JsValue::from_f64(loaded as f64), &JsValue::from_f64(total));
        }
    };
    progress(0);
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| error(format!("downloading {url} failed: {}", describe(&e))))?;
        if Reflect::get(&chunk, &"done".into())?.as_bool().unwrap_or(false) {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into())?.dyn_into()?;
        let start = bytes.len();
        bytes.resize(start + value.length() as usize, 0);
        value.copy_to(&mut bytes[start..]);
        if bytes.len() > crate::bundle::MAX_BUNDLE_BYTES {
            return Err(error(format!("{url}: the model file is larger than {} MB", crate::bundle::MAX_BUNDLE_BYTES >> 20)));
        }
        progress(bytes.len());
    }
    Ok(bytes)
}

fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}
