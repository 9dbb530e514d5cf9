//! RSRefSeg 2 end to end: SigLIP towers → cascaded prompter → SAM 2.1 (reference §1, §17.3).
//!
//! Inference is split so that an image is encoded once ([`RsRefSeg::encode_image`]: SigLIP
//! vision + Hiera/FPN, the expensive part) and each sentence then costs only the text tower, the
//! prompter and SAM's decoder ([`RsRefSeg::query`]).

use crate::checkpoint::keys::rsrefseg_release::{IGNORED_PREFIXES, SAM_NAMES, SECTIONS};
use crate::checkpoint::keys::{section, LoraHandling};
use crate::checkpoint::{load_module_owned, read_tensors, LoadError, LoadOptions, LoadReport, TensorMap};
use crate::config::RsRefSegConfig;
use crate::encoders::{Siglip, SiglipTextOutput};
use crate::pre::{clip_pixels, sam_pixels};
use crate::prompter::{CascadedPrompter, PrompterOutput};
use crate::sam::mask_decoder::{HighResFeatures, MaskDecoderOutput};
use crate::sam::prompt_encoder::PointPrompts;
use crate::sam::{Sam2, Sam2ImageFeatures};
use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor};

#[derive(Module, Debug)]
pub struct RsRefSeg<B: Backend> {
    pub siglip: Siglip<B>,
    pub prompter: CascadedPrompter<B>,
    pub sam: Sam2<B>,
    /// SAM's mask-input side (the dense prompt is produced at this size).
    pub mask_size: usize,
    /// SigLIP's native input side.
    pub clip_size: usize,
}

/// What an image contributes to every query.
#[derive(Clone, Debug)]
pub struct ImageEncoding<B: Backend> {
    /// SigLIP `last_hidden_state` v `[b, g², d1]`.
    pub v: Tensor<B, 3>,
    /// SAM image features (image embedding + no_mem_embed, high-res features, backbone outputs).
    pub sam: Sam2ImageFeatures<B>,
}

/// Everything a query produces.
#[derive(Clone, Debug)]
pub struct RsRefSegOutput<B: Backend> {
    /// Low-resolution mask logits of the selected mask `[b, 1, m, m]` (token 0 in training; with
    /// the stability fallback in evaluation when the config enables it).
    pub mask_logits: Tensor<B, 4>,
    /// Predicted IoU of the selected mask `[b, 1]`.
    pub iou: Tensor<B, 2>,
    pub text: SiglipTextOutput<B>,
    pub prompter: PrompterOutput<B>,
    /// `mask_downscaling(dense prompt)` `[b, d2, m/4, m/4]`.
    pub dense_embedding: Tensor<B, 4>,
    pub decoder: MaskDecoderOutput<B>,
}

impl<B: Backend> RsRefSegOutput<B> {
    /// The dense localization map (dense prompt logits) `[b, 1, m, m]`, for display.
    pub fn localization(&self) -> Option<Tensor<B, 4>> {
        self.prompter.dense.clone()
    }
}

impl RsRefSegConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<RsRefSeg<B>, String> {
        self.validate()?;
        Ok(RsRefSeg {
            siglip: Siglip::new(&self.siglip, device)?,
            prompter: self.prompter.init(device),
            sam: self.sam.init(device),
            mask_size: self.mask_size(),
            clip_size: self.siglip.vision_config.image_size,
        })
    }
}

/// Repeat a batch-1 tensor `n` times along the batch (one image, many sentences).
fn expand_batch<B: Backend, const D: usize>(t: Tensor<B, D>, n: usize) -> Tensor<B, D> {
    let b = t.dims()[0];
    if b == n {
        return t;
    }
    assert_eq!(b, 1, "cannot pair {b} images with {n} sentences");
    Tensor::cat(vec![t; n], 0)
}

impl<B: Backend> RsRefSeg<B> {
    /// The model with the `Linear` layers of its two encoders (SigLIP's towers, Hiera) quantised
    /// for the CPU's int8 products ([`crate::nn::LoraLinear::quantize_int8`]): the CLI's
    /// `--precision int8`. The prompter and SAM's decoder, a small share of the work, stay f32.
    /// On backends other than the CPU kernels' the model is unchanged.
    pub fn quantize_int8(self) -> Self {
        use crate::nn::lora::LoraModule;
        Self { siglip: self.siglip.quantize_int8(), sam: self.sam.quantize_encoder_int8(), ..self }
    }

    /// Encode images once.
    ///
    /// # Shapes
    /// - x01: `[b, 3, S, S]` from [`crate::pre::to_x01`] (resized, /255, zero-padded)
    pub fn encode_image(&self, x01: Tensor<B, 4>) -> ImageEncoding<B> {
        let v = self.encode_aligner(x01.clone());
        let sam = self.sam.encode_image(sam_pixels(x01));
        ImageEncoding { v, sam }
    }

    /// The SigLIP vision tower alone: `v` `[b, g², d1]`, all the prompter needs, e.g. to find
    /// where in a whole scene a sentence's object lies before SAM encodes anything.
    pub fn encode_aligner(&self, x01: Tensor<B, 4>) -> Tensor<B, 3> {
        self.siglip.vision_model.forward(clip_pixels(x01, self.clip_size))
    }

    /// Answer sentences about encoded images: text tower, prompter, SAM decoder. A single encoded
    /// image is paired with every sentence of the batch.
    ///
    /// The same as [`Self::encode_text`], then [`Self::prompt`], then [`Self::decode`] (the stages
    /// are public so that callers can time them separately, e.g. the browser build).
    ///
    /// # Shapes
    /// - input_ids, attention_mask: `[b, l]`
    /// - `training`: mask token 0 always (as the loss is computed); otherwise SAM's stability
    ///   fallback when the config enables it
    pub fn query(
        &self,
        image: &ImageEncoding<B>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        training: bool,
    ) -> RsRefSegOutput<B> {
        let text = self.encode_text(input_ids, attention_mask);
        let prompter = self.prompt(image, &text);
        self.decode(image, text, prompter, training)
    }

    /// Query stage 1: the SigLIP text tower.
    pub fn encode_text(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> SiglipTextOutput<B> {
        self.siglip.text_model.forward(input_ids, attention_mask)
    }

    /// Query stage 2: the cascaded prompter (sparse and dense prompts) for every sentence of `text`.
    pub fn prompt(&self, image: &ImageEncoding<B>, text: &SiglipTextOutput<B>) -> PrompterOutput<B> {
        self.prompt_from(&image.v, text)
    }

    /// [`Self::prompt`] from SigLIP's image tokens `v` `[1 | b, g², d1]` alone.
    pub fn prompt_from(&self, v: &Tensor<B, 3>, text: &SiglipTextOutput<B>) -> PrompterOutput<B> {
        let [b, _] = text.t_sent.dims();
        let v = expand_batch(v.clone(), b);
        self.prompter.forward(
            v,
            text.t_word.clone(),
            text.t_sent.clone(),
            self.siglip.logit_scale.val(),
            self.siglip.logit_bias.val(),
            self.mask_size,
        )
    }

    /// Query stage 3: SAM's prompt encoder (dense prompt) and mask decoder.
    pub fn decode(
        &self,
        image: &ImageEncoding<B>,
        text: SiglipTextOutput<B>,
        prompter: PrompterOutput<B>,
        training: bool,
    ) -> RsRefSegOutput<B> {
        self.decode_refined(image, text, prompter, Refinement::default(), training)
    }

    /// Query stage 3 with the user's corrections (beyond the paper): clicks and a box are
    /// encoded by SAM's prompt encoder and appended to the prompter's sparse prompts, and the
    /// previous answer's low-resolution logits, when given, are the mask prompt in place of the
    /// dense prompt — SAM's own iterative refinement. Only this stage re-runs; the image
    /// encoding and the sentence's prompts are reused.
    pub fn decode_refined(
        &self,
        image: &ImageEncoding<B>,
        text: SiglipTextOutput<B>,
        prompter: PrompterOutput<B>,
        refinement: Refinement<B>,
        training: bool,
    ) -> RsRefSegOutput<B> {
        let [b, _] = text.t_sent.dims();
        let pe = &self.sam.sam_prompt_encoder;
        let Refinement { points, boxes, previous_mask } = refinement;
        let dense_embedding = match (previous_mask, &prompter.dense) {
            (Some(previous), _) => pe.mask_downscaling.forward(previous),
            (None, Some(dense)) => pe.mask_downscaling.forward(dense.clone()),
            // Without a dense prompt SAM gets its learned "no mask" embedding.
            (None, None) => pe.forward(None, None, None, b).dense,
        };
        let sparse = if points.is_some() || boxes.is_some() {
            let user = pe.forward(points, boxes, None, b).sparse;
            Tensor::cat(vec![prompter.sparse.clone(), user], 1)
        } else {
            prompter.sparse.clone()
        };
        let features = Sam2ImageFeatures {
            image_embed: expand_batch(image.sam.image_embed.clone(), b),
            high_res: image.sam.high_res.as_ref().map(|h| HighResFeatures {
                feat_s0: expand_batch(h.feat_s0.clone(), b),
                feat_s1: expand_batch(h.feat_s1.clone(), b),
            }),
            backbone: image.sam.backbone.clone(),
            image_pe: image.sam.image_pe.clone(),
        };
        let decoder = self.sam.decode(&features, sparse, dense_embedding.clone(), false, training);
        RsRefSegOutput {
            mask_logits: decoder.masks.clone(),
            iou: decoder.iou_pred.clone(),
            text,
            prompter,
            dense_embedding,
            decoder,
        }
    }

    /// [`Self::encode_image`] then [`Self::query`].
    pub fn forward(
        &self,
        x01: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        training: bool,
    ) -> RsRefSegOutput<B> {
        let image = self.encode_image(x01);
        self.query(&image, input_ids, attention_mask, training)
    }
}

/// The user's corrections of an answer, in the model's input frame (pixels of the padded S×S
/// image SAM sees).
///
/// # Shapes
/// - points: coords `[b, n, 2]` as `(x, y)`, labels `[b, n]` (1 = on the object, 0 = not)
/// - boxes: `[b, 4]` as `(x0, y0, x1, y1)`
/// - previous_mask: the previous answer's low-resolution logits `[b, 1, m, m]`
#[derive(Clone, Debug, Default)]
pub struct Refinement<B: Backend> {
    pub points: Option<PointPrompts<B>>,
    pub boxes: Option<Tensor<B, 2>>,
    pub previous_mask: Option<Tensor<B, 4>>,
}

/// Canonical tensors of [`RsRefSeg`] from the released RSRefSeg 2 state dict, LoRA merged
/// (inference) or kept as adapters (fine-tuning a model with LoRA attached).
pub fn release_tensors(file: TensorMap, lora: LoraHandling) -> Result<TensorMap, LoadError> {
    let mut out = TensorMap::new();
    let mut claimed = 0usize;
    for s in SECTIONS {
        let part = section(&file, s.file_prefix);
        claimed += part.len();
        let (mut canonical, _) = s.table.apply_with(part, lora)?;
        if s.model_prefix == "sam." {
            canonical = SAM_NAMES.apply(canonical)?.0;
        }
        for (k, v) in canonical {
            out.insert(format!("{}{k}", s.model_prefix), v);
        }
    }
    // Anything outside the known sections is reported as unexpected by the loader.
    for (k, v) in &file {
        let known = SECTIONS.iter().any(|s| k.starts_with(s.file_prefix));
        let ignored = IGNORED_PREFIXES.iter().any(|p| k.starts_with(p));
        if !known && !ignored {
            out.insert(k.clone(), v.clone());
        } else if ignored {
            claimed += 1;
        }
    }
    let _ = claimed;
    Ok(out)
}

/// Which layout a full-model file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullModelFormat {
    /// The released RSRefSeg 2 state dict (PEFT keys).
    Release,
    /// This crate's own canonical names (exports, training checkpoints).
    Native,
}

pub fn detect_full_model_format(tensors: &TensorMap) -> FullModelFormat {
    if tensors.keys().any(|k| k.starts_with("clip_vision_encoder.") || k.starts_with("backbone.model.")) {
        FullModelFormat::Release
    } else {
        FullModelFormat::Native
    }
}

/// Build the full model from a state dict in either layout (strict unless asked otherwise).
pub fn load_rsrefseg_tensors<B: Backend>(
    tensors: TensorMap,
    config: &RsRefSegConfig,
    device: &B::Device,
    options: LoadOptions,
) -> Result<(RsRefSeg<B>, LoadReport), LoadError> {
    let canonical = match detect_full_model_format(&tensors) {
        FullModelFormat::Release => release_tensors(tensors, LoraHandling::Merge { scale: config.lora.scale() as f32 })?,
        FullModelFormat::Native => tensors,
    };
    let model = config.init(device).map_err(LoadError::Config)?;
    let model = load_module_owned(model, canonical, device, options, "RSRefSeg 2 model")?;
    Ok(model)
}

/// [`load_rsrefseg_tensors`] from a file (safetensors, or a torch `.pt` with `state_dict`).
pub fn load_rsrefseg<B: Backend>(
    path: &std::path::Path,
    config: &RsRefSegConfig,
    device: &B::Device,
    options: LoadOptions,
) -> Result<RsRefSeg<B>, LoadError> {
    load_rsrefseg_tensors(read_tensors(path)?, config, device, options).map(|(m, _)| m)
}
