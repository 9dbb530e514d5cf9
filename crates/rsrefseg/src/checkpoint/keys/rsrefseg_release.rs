//! The released RSRefSeg 2 checkpoint (`{'state_dict': …}` torch file or safetensors): the whole
//! model in one state dict, encoders wrapped by PEFT (`base_layer`, `lora_A.default`,
//! `lora_B.default` under `base_model.model.`), reference §13.
//!
//! The file is cut into sections by prefix; each section gets the PEFT transforms and then the
//! key table of the format it contains, and lands under the model field that holds that part.

use super::{prompter, sam2_original, KeyTable, Transform};

/// One part of the file: keys under `file_prefix` go through `table` and are placed under
/// `model_prefix` in the canonical names of [`crate::model::RsRefSeg`].
#[derive(Clone, Copy, Debug)]
pub struct Section {
    pub file_prefix: &'static str,
    pub model_prefix: &'static str,
    pub table: &'static KeyTable,
}

/// PEFT wrapping, undone for inference: LoRA merged into the base weights (with the scale
/// alpha / r of the model configuration's `lora`, see `LoraHandling`), wrapper prefix removed.
const MERGE_PEFT: &[Transform] = &[Transform::MergePeftLora, Transform::StripInfix("base_model.model.")];

const SIGLIP_VISION: KeyTable = KeyTable {
    format: "RSRefSeg 2 release: SigLIP vision (PEFT)",
    transforms: &[
        // The reference never applies the LoRA on the MAP head's out_proj (torch's
        // MultiheadAttention reads `out_proj.weight` directly): drop it before merging.
        Transform::Drop(r".*head\.attention\.out_proj\.lora_[AB](\.default)?\.weight"),
        Transform::MergePeftLora,
        Transform::StripInfix("base_model.model."),
    ],
    renames: &[(r"^model\.", "vision_model.")],
    ignored: &[],
};

const SIGLIP_TEXT: KeyTable = KeyTable {
    format: "RSRefSeg 2 release: SigLIP text (PEFT)",
    transforms: MERGE_PEFT,
    // `logit_scale` / `logit_bias` sit next to the wrapped text model and are the SigLIP scalars.
    renames: &[(r"^model\.", "text_model.")],
    ignored: &[],
};

const SAM_IMAGE_ENCODER: KeyTable = KeyTable {
    format: "RSRefSeg 2 release: SAM 2.1 (PEFT on the image encoder)",
    transforms: MERGE_PEFT,
    renames: &[],
    ignored: &[],
};

pub const SECTIONS: &[Section] = &[
    Section { file_prefix: "clip_vision_encoder.", model_prefix: "siglip.", table: &SIGLIP_VISION },
    Section { file_prefix: "clip_text_encoder.", model_prefix: "siglip.", table: &SIGLIP_TEXT },
    // PEFT first, then the original SAM 2 names (see `sam2_original`).
    Section { file_prefix: "backbone.model.", model_prefix: "sam.", table: &SAM_IMAGE_ENCODER },
    Section { file_prefix: "prompter.", model_prefix: "prompter.", table: &prompter::TABLE },
];

/// Applied to the `sam.` section after [`SAM_IMAGE_ENCODER`].
pub const SAM_NAMES: &KeyTable = &sam2_original::TABLE;

/// Parts of the file that inference does not use: the loss head's learnable temperatures and
/// biases (`decode_head.logit_scale1/2`, `logit_bias1/2`), stored as 0-d tensors.
pub const IGNORED_PREFIXES: &[&str] = &["decode_head."];

/// The loss head's section, for resuming training from a released checkpoint.
pub const DECODE_HEAD: KeyTable = KeyTable {
    format: "RSRefSeg 2 release: loss head",
    transforms: &[Transform::ScalarToVector(r"logit_(scale|bias)[12]")],
    renames: &[],
    ignored: &[],
};
