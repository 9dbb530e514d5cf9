//! JavaScript conversions: result objects, typed arrays, errors, and the panic hook.

use js_sys::Reflect;
use wasm_bindgen::prelude::*;

/// A message ([`crate::messages`]) as a JavaScript value: camelCase fields, `None` as `null`,
/// byte buffers as `Uint8Array`.
pub fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true))
        .map_err(|e| error(format!("building the result: {e}")))
}

/// A message from a JavaScript value, with an error naming what is wrong with it.
pub fn from_js<T: serde::de::DeserializeOwned>(v: JsValue, what: &str) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(v).map_err(|e| error(format!("{what}: {e}")))
}

/// An `Error` with `message` (what the page shows).
pub fn error(message: impl AsRef<str>) -> JsValue {
    js_sys::Error::new(message.as_ref()).into()
}

/// Log panics to the console, and tell the worker's owner: a panic inside an exported async
/// function leaves its promise pending forever, so `web/worker.js` reports it to the page
/// (`{type: "panic"}`), which then restarts the worker.
pub fn install_panic_hook() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            console_error_panic_hook::hook(info);
            let global = js_sys::global();
            if let Ok(f) = Reflect::get(&global, &"rsrefsegOnPanic".into()) {
                if let Some(f) = f.dyn_ref::<js_sys::Function>() {
                    let _ = f.call1(&global, &JsValue::from_str(&info.to_string()));
                }
            }
        }));
    });
}
