//! First-order text–visual interaction: t1 attends to itself, then the image tokens (as queries)
//! attend to t1 (reference §3.3). The refined t1 is discarded after the stage; only the image
//! tokens carry the cascade forward.

use super::{with_pe, PrompterConfig};
use crate::nn::{Attention, Mlp};
use burn::module::Module;
use burn::nn::LayerNorm;
use burn::tensor::{backend::Backend, Tensor};

#[derive(Module, Debug)]
pub struct FirstOrderBlock<B: Backend> {
    pub self_attn_text_text_1: Attention<B>,
    pub cross_attn_img_text_1: Attention<B>,
    pub norm_text_1: LayerNorm<B>,
    pub norm_img_1: LayerNorm<B>,
    pub norm_img_2: LayerNorm<B>,
    pub mlp_img_1: Mlp<B>,
}

impl<B: Backend> FirstOrderBlock<B> {
    pub fn new(c: &PrompterConfig, device: &B::Device) -> Self {
        let d = c.clip_dim;
        Self {
            self_attn_text_text_1: c.attn(d, d, device),
            cross_attn_img_text_1: c.attn(d, d, device),
            norm_text_1: c.norm(d, device),
            norm_img_1: c.norm(d, device),
            norm_img_2: c.norm(d, device),
            mlp_img_1: c.mlp(d, device),
        }
    }

    /// # Shapes
    /// a (t1): `[b, n_t, d1]`; x (image tokens): `[b, g·g, d1]`; p1: `[1, n_t, d1]`;
    /// img_pe: `[1, g·g, d1]` → (a, x)
    pub fn forward(
        &self,
        a: Tensor<B, 3>,
        x: Tensor<B, 3>,
        p1: &Option<Tensor<B, 3>>,
        img_pe: &Option<Tensor<B, 3>>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let ka = with_pe(a.clone(), p1);
        let a = self.norm_text_1.forward(a.clone() + self.self_attn_text_text_1.forward(ka.clone(), ka, a, None));
        let att = self.cross_attn_img_text_1.forward(with_pe(x.clone(), img_pe), with_pe(a.clone(), p1), a.clone(), None);
        let x = self.norm_img_1.forward(x + att);
        let x = self.norm_img_2.forward(x.clone() + self.mlp_img_1.forward(x));
        (a, x)
    }
}
