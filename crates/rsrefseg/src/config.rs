//! The whole model's configuration, with named presets.
//!
//! One JSON document describes a model (the `--config` file of the CLI, the config of a web
//! bundle): `{"siglip": <HF SigLIP config.json>, "sam": <Sam2Config>, "prompter": <PrompterConfig>,
//! "tokenizer": <TokenizerConfig>}`. Derived sizes (SigLIP grid, SAM mask-input size) are
//! computed, never stored, and [`RsRefSegConfig::validate`] checks that the parts fit together.

use crate::encoders::{SiglipConfig, TokenizerConfig};
use crate::prompter::PrompterConfig;
use crate::sam::Sam2Config;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RsRefSegConfig {
    pub siglip: SiglipConfig,
    pub sam: Sam2Config,
    pub prompter: PrompterConfig,
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
}

impl RsRefSegConfig {
    /// The paper's model: SigLIP2-so400m-patch16-512 + SAM 2.1-large, d1 = 1152, grid 32.
    pub fn paper() -> Self {
        Self::assemble(SiglipConfig::siglip2_so400m_patch16_512(), Sam2Config::large())
    }

    /// The browser build: SigLIP2-base-patch16-512 + SAM 2.1-tiny (d1 = 768, grid 32).
    pub fn browser() -> Self {
        Self::assemble(SiglipConfig::siglip2_base_patch16_512(), Sam2Config::tiny())
    }

    /// The tiny random model of the reference fixture set (`shared/fixtures/reference`):
    /// SigLIP d1 = 64 (grid 8), SAM at S = 128 with d2 = 32, prompter with 4 heads of width 8.
    pub fn reference_dev() -> Self {
        let siglip = SiglipConfig::from_hf_json(
            r#"{"model_type":"siglip",
            "text_config":{"vocab_size":96,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                           "num_attention_heads":4,"max_position_embeddings":16},
            "vision_config":{"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                             "num_attention_heads":4,"image_size":64,"patch_size":8}}"#,
        )
        .expect("preset");
        let mut c = Self::assemble(siglip, Sam2Config::reference_dev());
        c.prompter = c.prompter.with_num_heads(4).with_internal_dim(32).with_mlp_dim(32);
        c.tokenizer.max_length = 16;
        c
    }

    /// A prompter sized for the given encoders, with the released hyper-parameters.
    fn assemble(siglip: SiglipConfig, sam: Sam2Config) -> Self {
        let prompter = PrompterConfig::new(siglip.vision_config.hidden_size, sam.d_model, siglip.vision_config.grid());
        Self { siglip, sam, prompter, tokenizer: TokenizerConfig::rsrefseg2() }
    }

    pub fn from_json(json: &str) -> Result<Self, String> {
        let c: Self = serde_json::from_str(json).map_err(|e| format!("invalid model configuration: {e}"))?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serialisable")
    }

    /// SAM's mask-input / low-resolution mask side (4 × the image-embedding side).
    pub fn mask_size(&self) -> usize {
        4 * self.sam.image_embedding_size()
    }

    /// Model input side S of the SAM branch (the pre-processing target).
    pub fn image_size(&self) -> usize {
        self.sam.image_size
    }

    /// Check that the parts agree (widths, grid, positions).
    pub fn validate(&self) -> Result<(), String> {
        let v = &self.siglip.vision_config;
        let t = &self.siglip.text_config;
        let p = &self.prompter;
        if t.hidden_size != v.hidden_size || p.clip_dim != v.hidden_size {
            return Err(format!(
                "SigLIP text width {}, vision width {} and prompter clip_dim {} must be equal",
                t.hidden_size, v.hidden_size, p.clip_dim
            ));
        }
        if t.head_dim() != t.hidden_size {
            return Err(format!("SigLIP text projection_size {} must equal hidden_size {}", t.head_dim(), t.hidden_size));
        }
        if p.grid != v.grid() {
            return Err(format!("prompter grid {} but SigLIP's patch grid is {}", p.grid, v.grid()));
        }
        if p.prompt_dim != self.sam.d_model {
            return Err(format!("prompter prompt_dim {} but SAM's d_model is {}", p.prompt_dim, self.sam.d_model));
        }
        if self.tokenizer.max_length > t.max_position_embeddings {
            return Err(format!(
                "tokenizer max_length {} exceeds the text tower's {} positions",
                self.tokenizer.max_length, t.max_position_embeddings
            ));
        }
        if self.sam.image_size % self.sam.backbone_stride != 0 {
            return Err(format!("SAM image_size {} is not a multiple of {}", self.sam.image_size, self.sam.backbone_stride));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_consistent_and_round_trip() {
        for c in [RsRefSegConfig::paper(), RsRefSegConfig::browser(), RsRefSegConfig::reference_dev()] {
            c.validate().unwrap();
            let back = RsRefSegConfig::from_json(&c.to_json()).unwrap();
            assert_eq!(back.to_json(), c.to_json());
        }
        assert_eq!(RsRefSegConfig::paper().mask_size(), 256);
        assert_eq!(RsRefSegConfig::paper().prompter.clip_dim, 1152);
        assert_eq!(RsRefSegConfig::reference_dev().mask_size(), 32);
    }

    #[test]
    fn mismatched_parts_are_rejected() {
        let mut c = RsRefSegConfig::browser();
        c.prompter.grid = 24;
        assert!(c.validate().unwrap_err().contains("grid"));
    }
}
