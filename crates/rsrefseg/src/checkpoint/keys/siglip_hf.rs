//! Hugging Face `SiglipModel` safetensors (e.g. `google/siglip2-base-patch16-512/model.safetensors`).
//!
//! The module tree of [`crate::encoders::Siglip`] mirrors transformers' names, so no key is renamed.

use super::KeyTable;

pub const TABLE: KeyTable = KeyTable {
    format: "Hugging Face SiglipModel safetensors",
    transforms: &[],
    renames: &[],
    // transformers keeps a non-persistent `position_ids` buffer out of the file, but some exports
    // (older versions) contain it; it is derived, never learned.
    ignored: &[r"(text_model|vision_model)\.embeddings\.position_ids"],
};
