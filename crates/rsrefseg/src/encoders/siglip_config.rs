//! SigLIP configuration, read from (or written as) a Hugging Face `config.json`.
//!
//! Defaults are transformers' `SiglipTextConfig` / `SiglipVisionConfig` defaults, so a checkpoint's
//! `config.json` that only lists what differs (as the SigLIP2 releases do) parses to the right
//! model. Unknown fields are ignored.

use crate::nn::Activation;
use serde::{Deserialize, Serialize};

fn d_hidden() -> usize { 768 }
fn d_inter() -> usize { 3072 }
fn d_layers() -> usize { 12 }
fn d_heads() -> usize { 12 }
fn d_eps() -> f64 { 1e-6 }
fn d_act() -> String { "gelu_pytorch_tanh".into() }
fn d_vocab() -> usize { 32000 }
fn d_max_pos() -> usize { 64 }
fn d_image() -> usize { 224 }
fn d_patch() -> usize { 16 }
fn d_channels() -> usize { 3 }
fn d_true() -> bool { true }

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SiglipTextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Number of position rows (64 for every SigLIP2 release: longer text is unsupported).
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Output width of the pooled-text `head`; transformers defaults it to `hidden_size`.
    #[serde(default)]
    pub projection_size: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SiglipVisionConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// Native input size; the position table has `(image_size / patch_size)²` rows.
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Whether the checkpoint has the MAP pooling head (its output is unused by RSRefSeg 2, but
    /// its tensors are part of the file).
    #[serde(default = "d_true")]
    pub vision_use_head: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SiglipConfig {
    pub text_config: SiglipTextConfig,
    pub vision_config: SiglipVisionConfig,
    #[serde(default)]
    pub model_type: Option<String>,
}

impl Default for SiglipTextConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl Default for SiglipVisionConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl SiglipTextConfig {
    pub fn activation(&self) -> Result<Activation, String> {
        Activation::from_hf(&self.hidden_act).ok_or_else(|| format!("unsupported hidden_act {:?}", self.hidden_act))
    }
    pub fn head_dim(&self) -> usize {
        self.projection_size.unwrap_or(self.hidden_size)
    }
}

impl SiglipConfig {
    /// Every value the towers divide by, index with or iterate over, checked before anything is
    /// built.
    pub fn check(&self) -> Result<(), String> {
        let t = &self.text_config;
        let v = &self.vision_config;
        for (tower, width, heads, mlp, eps) in [
            ("text", t.hidden_size, t.num_attention_heads, t.intermediate_size, t.layer_norm_eps),
            ("vision", v.hidden_size, v.num_attention_heads, v.intermediate_size, v.layer_norm_eps),
        ] {
            if width == 0 || heads == 0 || width % heads != 0 {
                return Err(format!("SigLIP {tower}: hidden_size {width} must be a non-zero multiple of num_attention_heads {heads}"));
            }
            if mlp == 0 || width > 65536 || mlp > 262144 {
                return Err(format!("SigLIP {tower}: intermediate_size {mlp} / hidden_size {width} out of range"));
            }
            if !(eps.is_finite() && eps > 0.0) {
                return Err(format!("SigLIP {tower}: layer_norm_eps must be a finite number > 0, not {eps}"));
            }
        }
        if t.vocab_size == 0 || t.max_position_embeddings == 0 {
            return Err("SigLIP text: vocab_size and max_position_embeddings must be at least 1".into());
        }
        if t.vocab_size > 4_000_000 || t.max_position_embeddings > 65536 {
            return Err(format!(
                "SigLIP text: vocab_size {} / max_position_embeddings {} beyond any released model",
                t.vocab_size, t.max_position_embeddings
            ));
        }
        if v.patch_size == 0 || v.image_size == 0 || v.image_size % v.patch_size != 0 || v.image_size > 16384 {
            return Err(format!(
                "SigLIP vision: image_size {} must be a multiple of patch_size {} (both ≥ 1, image_size ≤ 16384)",
                v.image_size, v.patch_size
            ));
        }
        if v.num_channels != 3 {
            return Err(format!("SigLIP vision: num_channels {} (RGB input needs 3)", v.num_channels));
        }
        self.text_config.activation()?;
        v.activation()?;
        Ok(())
    }
}

impl SiglipVisionConfig {
    pub fn activation(&self) -> Result<Activation, String> {
        Activation::from_hf(&self.hidden_act).ok_or_else(|| format!("unsupported hidden_act {:?}", self.hidden_act))
    }
    /// Patch grid side at the native size (e.g. 512 / 16 = 32).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

impl SiglipConfig {
    /// Parse a Hugging Face `config.json` (`model_type` must be `siglip` when present: the NaFlex
    /// `siglip2` checkpoints use a different vision embedding and are rejected clearly).
    pub fn from_hf_json(json: &str) -> Result<Self, String> {
        let cfg: SiglipConfig = serde_json::from_str(json).map_err(|e| format!("invalid SigLIP config.json: {e}"))?;
        match cfg.model_type.as_deref() {
            None | Some("siglip") => {}
            Some(other) => {
                return Err(format!(
                    "config.json has model_type {other:?}; only fixed-resolution SigLIP/SigLIP2 checkpoints (model_type \"siglip\") are supported"
                ))
            }
        }
        cfg.text_config.activation()?;
        cfg.vision_config.activation()?;
        for (what, hidden, heads) in [
            ("text", cfg.text_config.hidden_size, cfg.text_config.num_attention_heads),
            ("vision", cfg.vision_config.hidden_size, cfg.vision_config.num_attention_heads),
        ] {
            if heads == 0 || hidden % heads != 0 {
                return Err(format!("{what} hidden_size {hidden} is not divisible by num_attention_heads {heads}"));
            }
        }
        Ok(cfg)
    }

    /// `google/siglip2-base-patch16-512` (the `browser` preset's encoder).
    pub fn siglip2_base_patch16_512() -> Self {
        Self::from_hf_json(
            r#"{"model_type":"siglip","text_config":{"vocab_size":256000},
                "vision_config":{"image_size":512}}"#,
        )
        .expect("preset")
    }

    /// `google/siglip2-so400m-patch16-512` (the `paper` preset's encoder).
    pub fn siglip2_so400m_patch16_512() -> Self {
        Self::from_hf_json(
            r#"{"model_type":"siglip",
                "text_config":{"vocab_size":256000,"hidden_size":1152,"intermediate_size":4304,
                               "num_hidden_layers":27,"num_attention_heads":16},
                "vision_config":{"image_size":512,"hidden_size":1152,"intermediate_size":4304,
                                 "num_hidden_layers":27,"num_attention_heads":16}}"#,
        )
        .expect("preset")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sparse_config_with_defaults() {
        let c = SiglipConfig::siglip2_base_patch16_512();
        assert_eq!(c.vision_config.grid(), 32);
        assert_eq!(c.text_config.max_position_embeddings, 64);
        assert_eq!(c.text_config.hidden_size, 768);
        assert_eq!(c.text_config.head_dim(), 768);
        let so = SiglipConfig::siglip2_so400m_patch16_512();
        assert_eq!(so.vision_config.hidden_size / so.vision_config.num_attention_heads, 72);
    }

    #[test]
    fn rejects_naflex_and_bad_heads() {
        let e = SiglipConfig::from_hf_json(r#"{"model_type":"siglip2","text_config":{},"vision_config":{}}"#).unwrap_err();
        assert!(e.contains("siglip2"), "{e}");
        let e = SiglipConfig::from_hf_json(r#"{"text_config":{"hidden_size":10},"vision_config":{}}"#).unwrap_err();
        assert!(e.contains("not divisible"), "{e}");
    }
}
