//! Original facebookresearch SAM 2 / 2.1 checkpoints (`sam2.1_hiera_*.pt`, `["model"]`), and the
//! SAM 2 part of RSRefSeg 2 checkpoints once their `backbone.model.` prefix is removed.
//!
//! The module tree uses the original names, so only the `nn.Sequential` slots are renamed.

use super::KeyTable;

pub const TABLE: KeyTable = KeyTable {
    format: "SAM 2 (original facebookresearch layout)",
    transforms: &[],
    renames: &[
        // A state dict saved with its `{"model": …}` wrapper flattened.
        (r"^model\.", ""),
        // Prompt encoder `mask_downscaling`: conv, LN2d, (GELU), conv, LN2d, (GELU), conv.
        (r"\.mask_downscaling\.0\.", ".mask_downscaling.conv1."),
        (r"\.mask_downscaling\.1\.", ".mask_downscaling.layer_norm1."),
        (r"\.mask_downscaling\.3\.", ".mask_downscaling.conv2."),
        (r"\.mask_downscaling\.4\.", ".mask_downscaling.layer_norm2."),
        (r"\.mask_downscaling\.6\.", ".mask_downscaling.conv3."),
        // Mask decoder `output_upscaling`: ConvT, LN2d, (GELU), ConvT, (GELU).
        (r"\.output_upscaling\.0\.", ".output_upscaling.conv1."),
        (r"\.output_upscaling\.1\.", ".output_upscaling.layer_norm."),
        (r"\.output_upscaling\.3\.", ".output_upscaling.conv2."),
    ],
    ignored: &[
        // Video / memory modules (unused for single images; RSRefSeg 2 deletes them).
        r"(model\.)?memory_attention\..*",
        r"(model\.)?memory_encoder\..*",
        r"(model\.)?obj_ptr_proj\..*",
        r"(model\.)?obj_ptr_tpos_proj\..*",
        r"(model\.)?mask_downsample\..*",
        r"(model\.)?maskmem_tpos_enc",
        r"(model\.)?no_mem_pos_enc",
        r"(model\.)?no_obj_ptr",
        r"(model\.)?no_obj_embed_spatial",
    ],
};
