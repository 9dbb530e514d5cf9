//! # rsrefseg — RSRefSeg 2 in burn
//!
//! Referring remote-sensing image segmentation: an aerial image and a sentence ("the white ship
//! left of the pier") in, the mask of the referred object out. The model follows the paper's
//! figure, and so does this crate:
//!
//! - [`encoders`]: the SigLIP(2) text and vision towers (dual-modality encoder) and the tokenizer;
//! - [`sam`]: SAM 2.1 — Hiera + FPN image encoder, prompt encoder, mask decoder;
//! - [`nn`]: primitives shared by several parts (attention, MLP, LayerNorm2d, resampling);
//! - [`checkpoint`]: reading safetensors / torch files and the per-format key tables;
//! - [`host`]: f32 tensors on the host (checkpoint contents, read-back results);
//! - [`export`]: the single-file (optionally quantised) model bundle of the browser build;
//! - [`pre`] / [`post`]: image pre-processing per branch and mask post-processing;
//! - [`segmenter`]: the one pipeline from an image file and a sentence to a mask;
//! - [`whole_scene`]: scenes far larger than the model's input, tiled, with GeoTIFF / GeoJSON.
//!
//! Every module is generic over a burn `Backend`; the CLI and the web crate pick one.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod encoders;
pub mod export;
pub mod host;
pub mod loss;
pub mod model;
pub mod nn;
pub mod post;
pub mod prompter;
pub mod pre;
pub mod sam;
pub mod segmenter;
pub mod synth;
pub mod train;
pub mod whole_scene;
