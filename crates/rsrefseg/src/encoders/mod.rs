//! Dual-modality encoder: the SigLIP(2) text and vision towers and the tokenizer.
//!
//! Compatible with Hugging Face `SiglipModel` checkpoints (the fixed-resolution SigLIP2 releases
//! such as `google/siglip2-base-patch16-512` use `model_type: "siglip"`). Parameter names equal the
//! checkpoint's, so the HF key table is the identity.

pub mod siglip;
pub mod siglip_config;
pub mod siglip_text;
pub mod siglip_vision;
pub mod tokenizer;

pub use siglip::{Siglip, SiglipTextOutput};
pub use siglip_config::{SiglipConfig, SiglipTextConfig, SiglipVisionConfig};
pub use siglip_text::SiglipTextTower;
pub use siglip_vision::SiglipVisionTower;
pub use tokenizer::{TextTokenizer, TokenizerConfig, TokenizedText};
