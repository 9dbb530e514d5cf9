//! JavaScript conversions: result objects, typed arrays, errors, and the panic hook.

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

/// A plain JavaScript object from `(key, value)` pairs.
pub fn object(fields: &[(&str, JsValue)]) -> Object {
    let o = Object::new();
    for (k, v) in fields {
        // Setting a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o
}

/// Bytes as a new `Uint8Array` (a copy owned by JavaScript, transferable to the page).
pub fn bytes(v: &[u8]) -> JsValue {
    Uint8Array::from(v).into()
}

pub fn num(v: f64) -> JsValue {
    JsValue::from_f64(v)
}

pub fn ids(v: &[u32]) -> JsValue {
    v.iter().map(|&i| JsValue::from(i)).collect::<Array>().into()
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
