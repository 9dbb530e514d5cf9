//! The whole model's configuration, with named presets.
//!
//! One JSON document describes a model (the `--config` file of the CLI, the config of a web
//! bundle): `{"siglip": <HF SigLIP config.json>, "sam": <Sam2Config>, "prompter": <PrompterConfig>,
//! "tokenizer": <TokenizerConfig>}`. Derived sizes (SigLIP grid, SAM mask-input size) are
//! computed, never stored, and [`RsRefSegConfig::validate`] checks that the parts fit together.

use crate::encoders::tokenizer::{Padding, PaddingSide, SpecialTokens};
use crate::encoders::{SiglipConfig, TokenizerConfig};
use crate::prompter::PrompterConfig;
use crate::sam::hiera::HieraConfig;
use crate::sam::Sam2Config;
use serde::{Deserialize, Serialize};

/// Text positions of the [`RsRefSegConfig::nano`] text tower (and its tokenizer's `max_length`).
pub const NANO_TEXT_POSITIONS: usize = 32;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RsRefSegConfig {
    pub siglip: SiglipConfig,
    pub sam: Sam2Config,
    pub prompter: PrompterConfig,
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    /// The LoRA adapters' settings: how a released-layout checkpoint's PEFT adapters are merged
    /// and what `train --lora` attaches.
    #[serde(default)]
    pub lora: LoraSettings,
}

/// LoRA rank and alpha: the update `B·A` is scaled by `alpha / r`. The released checkpoints use
/// r = 16, alpha = 16 (scale 1); a checkpoint trained with other settings needs its own here, or
/// its adapters merge with the wrong weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSettings {
    pub r: usize,
    pub alpha: f64,
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self { r: 16, alpha: 16.0 }
    }
}

impl LoraSettings {
    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
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

    /// The project's own small model, trained from scratch on the synthetic benchmark
    /// ([`crate::synth`], 256 × 256 scenes): the modules of [`Self::paper`] / [`Self::browser`],
    /// narrower and shallower, ≈ 4.5 M parameters. Every width is a multiple of 32 so that the
    /// browser build can block-quantise every `Linear`.
    ///
    /// - **SigLIP towers**: d1 = 128, 3 layers, 4 heads of 32, MLP 512 (4×, as SigLIP). The
    ///   vision tower reads the 256 × 256 scene at its native size with 16-pixel patches, so the
    ///   grid is 16 × 16: an object of the benchmark spans a few cells rather than one or none of
    ///   an 8 × 8 grid, and 256 tokens of width 128 stay cheap. No MAP head (its output is unused
    ///   by RSRefSeg 2 and nothing pretrained has to be loaded into it). The text vocabulary is
    ///   the synthetic word-level one ([`crate::synth::tokenizer::vocab_size`]: 4 specials + the
    ///   grammar's words); 32 positions, about twice the longest expressions the grammar writes
    ///   (17 tokens with EOS over the scenes of `tests/nano.rs`).
    /// - **Hiera**: embed 32 with 1 head (head width 32 at every stage), stages [1, 2, 3, 1] →
    ///   widths 32/64/128/256. With S = 256 the stage maps are 64², 32², 16², 8²; windows
    ///   [8, 4, 8, 4] divide all of them (and the lagged first block of each stage: 8 → 4 on 32²,
    ///   4 → 2 on 16², 8 → 4 on 8²), so nothing is padded. Block 5 (the last of stage 3, the
    ///   stride-16 level the image embedding comes from) attends globally over its 16² tokens.
    ///   Background position embedding 4 × 4, resized to 64².
    /// - **SAM**: S = 256, d2 = 64 → image embedding 256 / 16 = 16 × 16, mask input / low-res
    ///   mask 64 × 64. Decoder transformer 4 heads, MLP 256 (4×; the released 2048 is 8× of 256),
    ///   IoU head hidden 64 (= d2, as released), `mask_in_chans` 16 (SAM's own: the first
    ///   mask-downscaling conv has `mask_in_chans / 4` = 4 channels and a LayerNorm over them;
    ///   over 2 channels, as an earlier nano had, the LayerNorm reduces every position to the
    ///   sign of one difference and the dense prompt's magnitude never reaches the decoder).
    /// - **Prompter**: 4 heads, attention width 64 (heads of 16), MLP 128, released depths
    ///   (2 decomposition, 2 first-order, 2 second-order blocks), n_t = 3, n_p = 9.
    /// - **Tokenizer**: `models/nano/tokenizer.json` ([`crate::synth::tokenizer::tokenizer_json`]),
    ///   whose post-processor appends EOS; every sentence padded right to the 32 positions, as
    ///   SigLIP pads to its `max_length`: the text tower pools the last *position*, so with
    ///   padding to the longest sentence of a batch a sentence would be pooled at another
    ///   position (and give another t_sent) in training batches than alone at inference.
    pub fn nano() -> Self {
        let siglip = SiglipConfig::from_hf_json(&format!(
            r#"{{"model_type":"siglip",
            "text_config":{{"vocab_size":{vocab},"hidden_size":128,"intermediate_size":512,"num_hidden_layers":3,
                           "num_attention_heads":4,"max_position_embeddings":{NANO_TEXT_POSITIONS}}},
            "vision_config":{{"hidden_size":128,"intermediate_size":512,"num_hidden_layers":3,
                             "num_attention_heads":4,"image_size":256,"patch_size":16,"vision_use_head":false}}}}"#,
            vocab = crate::synth::tokenizer::vocab_size(),
        ))
        .expect("preset");
        let hiera = HieraConfig::new()
            .with_embed_dim(32)
            .with_num_heads(1)
            .with_stages(vec![1, 2, 3, 1])
            .with_window_spec(vec![8, 4, 8, 4])
            .with_global_att_blocks(vec![5])
            .with_window_pos_embed_bkg_spatial_size([4, 4]);
        let sam = Sam2Config::new(hiera)
            .with_image_size(256)
            .with_d_model(64)
            .with_mask_in_chans(16)
            .with_transformer_num_heads(4)
            .with_transformer_mlp_dim(256)
            .with_iou_head_hidden_dim(64)
            // Trained from scratch with the single-mask output only: the multimask tokens the
            // stability fallback would switch to are never trained, so the fallback is off.
            .with_dynamic_multimask_via_stability(false);
        let mut c = Self::assemble(siglip, sam);
        c.prompter = c.prompter.with_num_heads(4).with_internal_dim(64).with_mlp_dim(128);
        c.tokenizer = TokenizerConfig {
            special_tokens: SpecialTokens::FromTokenizer,
            padding: Padding::MaxLength,
            padding_side: PaddingSide::Right,
            max_length: NANO_TEXT_POSITIONS,
            ..TokenizerConfig::rsrefseg2()
        };
        c
    }

    /// A prompter sized for the given encoders, with the released hyper-parameters.
    fn assemble(siglip: SiglipConfig, sam: Sam2Config) -> Self {
        let prompter = PrompterConfig::new(siglip.vision_config.hidden_size, sam.d_model, siglip.vision_config.grid());
        Self { siglip, sam, prompter, tokenizer: TokenizerConfig::rsrefseg2(), lora: LoraSettings::default() }
    }

    pub fn from_json(json: &str) -> Result<Self, String> {
        let c: Self = serde_json::from_str(json).map_err(|e| format!("invalid model configuration: {e}"))?;
        // A misspelt field would otherwise silently fall back to its default.
        let input: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("invalid model configuration: {e}"))?;
        let known = serde_json::to_value(&c).map_err(|e| e.to_string())?;
        let mut unknown = Vec::new();
        unknown_fields(&input, &known, "", &mut unknown);
        if !unknown.is_empty() {
            return Err(format!("invalid model configuration: unknown field(s) {}", unknown.join(", ")));
        }
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

    /// Check every part (each value a layer divides by, indexes with or iterates over; see
    /// `SiglipConfig::check`, `Sam2Config::check`, `PrompterConfig::check`), then that the parts
    /// agree (widths, grid, positions). Every entry point (CLI, trainer, web bundles) builds
    /// models through a validated configuration.
    pub fn validate(&self) -> Result<(), String> {
        self.siglip.check()?;
        self.sam.check()?;
        self.prompter.check()?;
        if self.tokenizer.max_length == 0 {
            return Err("tokenizer max_length must be at least 1".into());
        }
        if !(1..=4096).contains(&self.lora.r) || !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
            return Err(format!("lora: r {} must be in 1..=4096 and alpha {} finite and > 0", self.lora.r, self.lora.alpha));
        }
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

/// Keys of `input` (recursively through objects) that the parsed configuration does not have.
fn unknown_fields(input: &serde_json::Value, known: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    if let (Some(i), Some(k)) = (input.as_object(), known.as_object()) {
        for (key, value) in i {
            let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            match k.get(key) {
                Some(kv) => unknown_fields(value, kv, &at, out),
                None => out.push(at),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_consistent_and_round_trip() {
        for c in [RsRefSegConfig::paper(), RsRefSegConfig::browser(), RsRefSegConfig::reference_dev(), RsRefSegConfig::nano()] {
            c.validate().unwrap();
            let back = RsRefSegConfig::from_json(&c.to_json()).unwrap();
            assert_eq!(back.to_json(), c.to_json());
        }
        assert_eq!(RsRefSegConfig::paper().mask_size(), 256);
        assert_eq!(RsRefSegConfig::paper().prompter.clip_dim, 1152);
        assert_eq!(RsRefSegConfig::reference_dev().mask_size(), 32);
        assert_eq!(RsRefSegConfig::nano().mask_size(), 64);
        assert_eq!(RsRefSegConfig::nano().prompter.grid, 16);
    }

    type B = burn::backend::NdArray<f32>;

    /// The nano preset stays under 5 M parameters, and a batch-1 forward gives the shapes its
    /// documentation derives (grid 16, image embedding 16², masks 64²).
    #[test]
    fn nano_is_small_and_runs() {
        use burn::module::Module;
        use burn::tensor::{Int, Tensor};
        let c = RsRefSegConfig::nano();
        c.validate().unwrap();
        let device = Default::default();
        let model = c.init::<B>(&device).unwrap();
        let n = model.num_params();
        let parts = [
            ("siglip", model.siglip.num_params()),
            ("prompter", model.prompter.num_params()),
            ("sam trunk", model.sam.image_encoder.trunk.num_params()),
            ("sam neck", model.sam.image_encoder.neck.num_params()),
            ("sam prompt encoder", model.sam.sam_prompt_encoder.num_params()),
            ("sam mask decoder", model.sam.sam_mask_decoder.num_params()),
        ];
        println!("nano: {n} parameters {parts:?}");
        assert!(n <= 5_000_000, "nano has {n} parameters");
        assert!(n >= 1_000_000, "nano has only {n} parameters");

        let x01 = Tensor::<B, 4>::random([1, 3, 256, 256], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
        let ids = Tensor::<B, 2, Int>::from_ints([[4, 5, 6, 1]], &device);
        let out = model.forward(x01, ids, None, false);
        assert_eq!(out.mask_logits.dims(), [1, 1, 64, 64]);
        assert_eq!(out.iou.dims(), [1, 1]);
        assert_eq!(out.text.t_word.dims(), [1, 4, 128]);
        assert_eq!(out.prompter.sparse.dims(), [1, 9, 64]);
        assert_eq!(out.localization().unwrap().dims(), [1, 1, 64, 64]);
        assert_eq!(out.dense_embedding.dims(), [1, 64, 16, 16]);
        let v: Vec<f32> = out.mask_logits.into_data().to_vec().unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn mismatched_parts_are_rejected() {
        let mut c = RsRefSegConfig::browser();
        c.prompter.grid = 24;
        assert!(c.validate().unwrap_err().contains("grid"));
    }

    /// Each of these once panicked inside a layer's constructor or the validator (attention with
    /// 0 heads or a width not divisible by them, Hiera's window list / q_pool / global blocks,
    /// SigLIP's patch grid, SAM's scalp and patch stride, `image_size` 0) or was silently
    /// accepted (unknown fields, out-of-range FPN levels). Now each is an error naming the field,
    /// and nothing is built.
    #[test]
    fn every_bad_field_is_an_error_not_a_panic() {
        let cases: Vec<(&str, Box<dyn Fn(&mut RsRefSegConfig)>)> = vec![
            ("num_attention_heads", Box::new(|c| c.siglip.text_config.num_attention_heads = 0)),
            ("num_attention_heads", Box::new(|c| c.siglip.vision_config.num_attention_heads = 7)),
            ("patch_size", Box::new(|c| c.siglip.vision_config.patch_size = 0)),
            ("layer_norm_eps", Box::new(|c| c.siglip.vision_config.layer_norm_eps = -1e-6)),
            ("layer_norm_eps", Box::new(|c| c.sam.hiera.layer_norm_eps = -1.0)),
            ("layer_norm_eps", Box::new(|c| c.prompter.layer_norm_eps = 0.0)),
            ("window_spec", Box::new(|c| c.sam.hiera.window_spec = vec![8, 4])),
            ("q_pool", Box::new(|c| c.sam.hiera.q_pool = 9)),
            ("global_att_blocks", Box::new(|c| c.sam.hiera.global_att_blocks = vec![99])),
            ("num_heads", Box::new(|c| c.sam.hiera.num_heads = 0)),
            ("patch_stride", Box::new(|c| c.sam.hiera.patch_stride = 0)),
            ("scalp", Box::new(|c| c.sam.scalp = 9)),
            ("fpn_top_down_levels", Box::new(|c| c.sam.fpn_top_down_levels = vec![2, 7])),
            ("image_size", Box::new(|c| c.sam.image_size = 0)),
            ("mask_in_chans", Box::new(|c| c.sam.mask_in_chans = 8 + 2)),
            ("transformer_num_heads", Box::new(|c| c.sam.transformer_num_heads = 0)),
            ("num_heads", Box::new(|c| c.prompter.num_heads = 0)),
            ("internal_dim", Box::new(|c| c.prompter.internal_dim = 65)),
            ("max_length", Box::new(|c| c.tokenizer.max_length = 0)),
        ];
        for (field, break_it) in cases {
            let mut c = RsRefSegConfig::nano();
            break_it(&mut c);
            let err = c.validate().expect_err(field);
            assert!(err.contains(field), "{field}: {err}");
            // The JSON entry point says the same, and `init` refuses without building.
            let err = RsRefSegConfig::from_json(&c.to_json()).expect_err(field);
            assert!(err.contains(field), "{field}: {err}");
            assert!(c.init::<burn::backend::NdArray<f32>>(&Default::default()).is_err(), "{field}");
        }
        let mut v: serde_json::Value = serde_json::from_str(&RsRefSegConfig::nano().to_json()).unwrap();
        v["sam"]["hiera"]["embed_dimm"] = 32.into();
        v["promter"] = serde_json::json!({});
        let err = RsRefSegConfig::from_json(&v.to_string()).unwrap_err();
        assert!(err.contains("sam.hiera.embed_dimm") && err.contains("promter"), "{err}");
        // LoRA settings: the released 16/16 when absent, read when given, checked.
        let mut v: serde_json::Value = serde_json::from_str(&RsRefSegConfig::nano().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("lora");
        assert_eq!(RsRefSegConfig::from_json(&v.to_string()).unwrap().lora, LoraSettings::default());
        v["lora"] = serde_json::json!({"r": 8, "alpha": 32.0});
        assert_eq!(RsRefSegConfig::from_json(&v.to_string()).unwrap().lora.scale(), 4.0);
        v["lora"] = serde_json::json!({"r": 0, "alpha": 16.0});
        assert!(RsRefSegConfig::from_json(&v.to_string()).unwrap_err().contains("lora"));
    }
}
