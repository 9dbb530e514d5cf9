//! The cascaded prompter's state dict (`prompter.*` of the RSRefSeg 2 release, or a standalone
//! `CascadedPrompter.state_dict()`).

use super::KeyTable;

pub const TABLE: KeyTable = KeyTable {
    format: "RSRefSeg 2 CascadedPrompter state dict",
    transforms: &[],
    renames: &[
        // nn.Sequential(conv, BN, GELU, conv) → named fields.
        (r"^dense_prompt_conv\.0\.", "dense_prompt_conv.conv1."),
        (r"^dense_prompt_conv\.1\.", "dense_prompt_conv.bn."),
        (r"^dense_prompt_conv\.3\.", "dense_prompt_conv.conv2."),
    ],
    // Only used by BatchNorm when momentum is None (cumulative average); the reference uses 0.1.
    ignored: &[r"dense_prompt_conv\.1\.num_batches_tracked"],
};
