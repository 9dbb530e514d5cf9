//! Hugging Face `Sam2Model` / `Sam2VideoModel` safetensors (the "Add Transformers weights" files
//! of `facebook/sam2.1-hiera-*`), i.e. the output of transformers' `convert_sam2_to_hf.py`,
//! mapped back to the original names the module tree uses.

use super::{KeyTable, Transform};

pub const TABLE: KeyTable = KeyTable {
    format: "SAM 2 (Hugging Face Sam2Model layout)",
    transforms: &[
        // The four point embeddings are stored stacked as one (4, d) table.
        Transform::UnstackRows { from: "prompt_encoder.point_embed.weight", to: "prompt_encoder.point_embed.{}.weight" },
        // The Fourier matrix is shared between the model and its prompt encoder.
        Transform::TiedCopy {
            name: "shared_image_embedding.positional_embedding",
            alias: "prompt_encoder.shared_embedding.positional_embedding",
        },
    ],
    renames: &[
        // Image encoder: trunk and neck.
        (r"^vision_encoder\.backbone\.", "image_encoder.trunk."),
        (r"^vision_encoder\.neck\.convs\.(\d+)\.", "image_encoder.neck.convs.$1.conv."),
        (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
        (r"^(image_encoder\.trunk\.blocks\.\d+)\.layer_norm(\d)\.", "$1.norm$2."),
        // Two-layer MLPs (Hiera blocks, two-way transformer layers).
        (r"\.mlp\.proj_in\.", ".mlp.layers.0."),
        (r"\.mlp\.proj_out\.", ".mlp.layers.1."),
        // Three-layer heads: the middle layer first, so that it is not renamed twice.
        (r"\.(iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+)\.layers\.0\.", ".$1.layers.1."),
        (r"\.(iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+)\.proj_in\.", ".$1.layers.0."),
        (r"\.(iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+)\.proj_out\.", ".$1.layers.2."),
        // Mask decoder.
        (r"^mask_decoder\.", "sam_mask_decoder."),
        (r"^(sam_mask_decoder\.transformer\.layers\.\d+)\.layer_norm(\d)\.", "$1.norm$2."),
        (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
        (r"\.o_proj\.", ".out_proj."),
        (r"\.upscale_conv1\.", ".output_upscaling.conv1."),
        (r"\.upscale_layer_norm\.", ".output_upscaling.layer_norm."),
        (r"\.upscale_conv2\.", ".output_upscaling.conv2."),
        // Prompt encoder.
        (r"^prompt_encoder\.", "sam_prompt_encoder."),
        (r"\.mask_embed\.", ".mask_downscaling."),
        (r"\.point_embed\.(\d+)\.", ".point_embeddings.$1."),
        (r"^shared_image_embedding\.positional_embedding$", "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
        (r"^no_memory_embedding$", "no_mem_embed"),
    ],
    ignored: &[
        // Video / memory modules of Sam2VideoModel.
        r"memory_attention\..*",
        r"memory_encoder\..*",
        r"object_pointer_proj\..*",
        r"temporal_positional_encoding_projection_layer\..*",
        r"mask_downsample\..*",
        r"memory_temporal_positional_encoding",
        r"no_memory_positional_encoding",
        r"no_object_pointer",
        r"occlusion_spatial_embedding_parameter",
    ],
};
