//! Second-order interaction with sparse-prompt generation (reference §3.3). In the authors' code
//! both live in the same block: the prompts of block k read the image tokens right after block
//! k's second-order update, not the final refined map as the paper's figure suggests.

use super::{with_pe, PrompterConfig};
use crate::nn::{Attention, Mlp};
use burn::module::Module;
use burn::nn::LayerNorm;
use burn::tensor::{backend::Backend, Tensor};

#[derive(Module, Debug)]
pub struct SecondOrderBlock<B: Backend> {
    pub self_attn_text_1: Attention<B>,
    pub cross_attn_img_text_1: Attention<B>,
    pub self_attn_prompt_1: Attention<B>,
    pub cross_attn_prompt_text_1: Attention<B>,
    pub cross_attn_prompt_img_1: Attention<B>,
    pub norm_text_1: LayerNorm<B>,
    pub norm_img_1: LayerNorm<B>,
    pub norm_img_2: LayerNorm<B>,
    pub norm_prompt_1: LayerNorm<B>,
    pub norm_prompt_2: LayerNorm<B>,
    pub norm_prompt_3: LayerNorm<B>,
    pub norm_prompt_4: LayerNorm<B>,
    pub norm_prompt_5: LayerNorm<B>,
    pub mlp_img_1: Mlp<B>,
    pub mlp_prompt_2: Mlp<B>,
    pub mlp_prompt_3: Mlp<B>,
}

impl<B: Backend> SecondOrderBlock<B> {
    pub fn new(c: &PrompterConfig, device: &B::Device) -> Self {
        let (d1, d2) = (c.clip_dim, c.prompt_dim);
        Self {
            self_attn_text_1: c.attn(d1, d1, device),
            cross_attn_img_text_1: c.attn(d1, d1, device),
            self_attn_prompt_1: c.attn(d2, d2, device),
            cross_attn_prompt_text_1: c.attn(d2, d1, device),
            cross_attn_prompt_img_1: c.attn(d2, d1, device),
            norm_text_1: c.norm(d1, device),
            norm_img_1: c.norm(d1, device),
            norm_img_2: c.norm(d1, device),
            norm_prompt_1: c.norm(d2, device),
            norm_prompt_2: c.norm(d2, device),
            norm_prompt_3: c.norm(d2, device),
            norm_prompt_4: c.norm(d2, device),
            norm_prompt_5: c.norm(d2, device),
            mlp_img_1: c.mlp(d1, device),
            mlp_prompt_2: c.mlp(d2, device),
            mlp_prompt_3: c.mlp(d2, device),
        }
    }

    /// # Shapes
    /// b (t2): `[b, n_t, d1]`; x: `[b, g·g, d1]`; p (prompts): `[b, n_p, d2]`;
    /// p2: `[1, n_t, d1]`; img_pe: `[1, g·g, d1]`; q (prompt PE): `[1, n_p, d2]` → (b, x, p)
    pub fn forward(
        &self,
        b: Tensor<B, 3>,
        x: Tensor<B, 3>,
        p: Tensor<B, 3>,
        p2: &Option<Tensor<B, 3>>,
        img_pe: &Option<Tensor<B, 3>>,
        q: &Option<Tensor<B, 3>>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        // Second-order interaction: t2 attends to itself, image tokens attend to t2.
        let kb = with_pe(b.clone(), p2);
        let b = self.norm_text_1.forward(b.clone() + self.self_attn_text_1.forward(kb.clone(), kb, b, None));
        let att = self.cross_attn_img_text_1.forward(with_pe(x.clone(), img_pe), with_pe(b.clone(), p2), b.clone(), None);
        let x = self.norm_img_1.forward(x + att);
        let x = self.norm_img_2.forward(x.clone() + self.mlp_img_1.forward(x));

        // Sparse prompts: self attention, read t2, read the image tokens.
        let kp = with_pe(p.clone(), q);
        let p = self.norm_prompt_1.forward(p.clone() + self.self_attn_prompt_1.forward(kp.clone(), kp, p, None));
        let att = self.cross_attn_prompt_text_1.forward(with_pe(p.clone(), q), with_pe(b.clone(), p2), b.clone(), None);
        let p = self.norm_prompt_2.forward(p + att);
        let p = self.norm_prompt_3.forward(p.clone() + self.mlp_prompt_2.forward(p));
        let att = self.cross_attn_prompt_img_1.forward(with_pe(p.clone(), q), with_pe(x.clone(), img_pe), x.clone(), None);
        let p = self.norm_prompt_4.forward(p + att);
        let p = self.norm_prompt_5.forward(p.clone() + self.mlp_prompt_3.forward(p));
        (b, x, p)
    }
}
