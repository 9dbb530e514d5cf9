//! One training step of the released recipe (reference §17.3): forward in training mode (mask
//! token 0, BatchNorm batch statistics), the four loss terms, backward, global-norm clipping,
//! AdamW.

use crate::config::RsRefSegConfig;
use crate::loss::{DecodeHead, DecodeHeadConfig, LossInputs, LossTerms, RefSegLoss};
use crate::model::RsRefSeg;
use crate::nn::lora::{freeze_base, LoraConfig, LoraModule, SAM2_TRAINABLE, SIGLIP_TRAINABLE};
use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor};

/// The trained module: the model plus the loss head's learnable scalars (τ, β of the contrastive
/// term), saved and restored together.
#[derive(Module, Debug)]
pub struct TrainModel<B: Backend> {
    pub model: RsRefSeg<B>,
    pub decode_head: DecodeHead<B>,
}

/// A batch on the device.
///
/// # Shapes
/// - x01: `[b, 3, S, S]`; gt: `[b, 1, S, S]` in {0, 1, 255}; input_ids, attention_mask: `[b, l]`
#[derive(Clone, Debug)]
pub struct Batch<B: Backend> {
    pub x01: Tensor<B, 4>,
    pub gt: Tensor<B, 4>,
    pub input_ids: Tensor<B, 2, Int>,
    pub attention_mask: Tensor<B, 2, Int>,
}

impl<B: Backend> TrainModel<B> {
    /// A model ready for fine-tuning: LoRA adapters attached to the encoders, base weights
    /// frozen, the reference's trainable set (LoRA, prompter, SAM prompt encoder + mask decoder +
    /// `no_mem_embed`, SigLIP's logit scale/bias, the loss-head scalars).
    pub fn new(config: &RsRefSegConfig, lora: Option<&LoraConfig>, device: &B::Device) -> Result<Self, String> {
        let model = config.init::<B>(device)?;
        Ok(Self::from_model(model, lora, device))
    }

    /// [`Self::new`] around an already loaded model. Without LoRA (training from scratch, e.g. the
    /// `nano` model) every parameter stays trainable.
    pub fn from_model(model: RsRefSeg<B>, lora: Option<&LoraConfig>, device: &B::Device) -> Self {
        let model = match lora {
            Some(lora) => {
                let siglip = freeze_base(model.siglip.attach_lora(lora, device), SIGLIP_TRAINABLE);
                let sam = freeze_base(model.sam.attach_lora(lora, device), SAM2_TRAINABLE);
                RsRefSeg { siglip, sam, ..model }
            }
            None => model,
        };
        Self { model, decode_head: DecodeHeadConfig::new().init(device) }
    }

    /// Training-mode forward and the loss terms.
    pub fn loss(&self, batch: &Batch<B>, loss: &RefSegLoss) -> LossTerms<B> {
        let image = self.model.encode_image(batch.x01.clone());
        let out = self.model.query(&image, batch.input_ids.clone(), Some(batch.attention_mask.clone()), true);
        // Raw SigLIP map for the contrastive term: (B, g², d1) -> (B, d1, g, g).
        let [b, n, d] = image.v.dims();
        let g = (n as f64).sqrt() as usize;
        let v = image.v.swap_dims(1, 2).reshape([b, d, g, g]);
        let inputs = LossInputs {
            mask_logits: out.mask_logits,
            gt: batch.gt.clone(),
            t1: out.prompter.t1,
            t2: out.prompter.t2,
            v,
        };
        loss.forward(inputs, &self.decode_head)
    }
}
