//! Referring semantic decomposition: two sets of text queries (subspaces t1, t2) each attend to
//! themselves, to the words, and to each other (reference §3.3; post-norm, PE on q/k only).

use super::{with_pe, PrompterConfig};
use crate::nn::{Attention, Mlp};
use burn::module::Module;
use burn::nn::LayerNorm;
use burn::tensor::{backend::Backend, Tensor};

#[derive(Module, Debug)]
pub struct SemanticDecompositionBlock<B: Backend> {
    pub self_attn_query_query1: Attention<B>,
    pub self_attn_query_query2: Attention<B>,
    pub cross_attn_query_text_query1_text: Attention<B>,
    pub cross_attn_query_text_query2_text: Attention<B>,
    pub cross_attn_query_query_query1_query2: Attention<B>,
    pub cross_attn_query_query_query2_query1: Attention<B>,
    pub norm_query1_1: LayerNorm<B>,
    pub norm_query1_2: LayerNorm<B>,
    pub norm_query1_3: LayerNorm<B>,
    pub norm_query1_4: LayerNorm<B>,
    pub norm_query1_5: LayerNorm<B>,
    pub norm_query2_1: LayerNorm<B>,
    pub norm_query2_2: LayerNorm<B>,
    pub norm_query2_3: LayerNorm<B>,
    pub norm_query2_4: LayerNorm<B>,
    pub norm_query2_5: LayerNorm<B>,
    pub mlp_query1_2: Mlp<B>,
    pub mlp_query1_3: Mlp<B>,
    pub mlp_query2_2: Mlp<B>,
    pub mlp_query2_3: Mlp<B>,
}

impl<B: Backend> SemanticDecompositionBlock<B> {
    pub fn new(c: &PrompterConfig, device: &B::Device) -> Self {
        let d = c.clip_dim;
        let a = || c.attn(d, d, device);
        let n = || c.norm(d, device);
        let m = || c.mlp(d, device);
        Self {
            self_attn_query_query1: a(),
            self_attn_query_query2: a(),
            cross_attn_query_text_query1_text: a(),
            cross_attn_query_text_query2_text: a(),
            cross_attn_query_query_query1_query2: a(),
            cross_attn_query_query_query2_query1: a(),
            norm_query1_1: n(),
            norm_query1_2: n(),
            norm_query1_3: n(),
            norm_query1_4: n(),
            norm_query1_5: n(),
            norm_query2_1: n(),
            norm_query2_2: n(),
            norm_query2_3: n(),
            norm_query2_4: n(),
            norm_query2_5: n(),
            mlp_query1_2: m(),
            mlp_query1_3: m(),
            mlp_query2_2: m(),
            mlp_query2_3: m(),
        }
    }

    /// # Shapes
    /// q1, q2: `[b, n_t, d1]`; t_word: `[b, l, d1]`; p1, p2: `[1, n_t, d1]` → (q1, q2)
    pub fn forward(
        &self,
        q1: Tensor<B, 3>,
        q2: Tensor<B, 3>,
        t_word: Tensor<B, 3>,
        p1: &Option<Tensor<B, 3>>,
        p2: &Option<Tensor<B, 3>>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        // Self attention within each subspace.
        let k1 = with_pe(q1.clone(), p1);
        let q1 = self.norm_query1_1.forward(q1.clone() + self.self_attn_query_query1.forward(k1.clone(), k1, q1, None));
        let k2 = with_pe(q2.clone(), p2);
        let q2 = self.norm_query2_1.forward(q2.clone() + self.self_attn_query_query2.forward(k2.clone(), k2, q2, None));

        // Each subspace reads the words (no PE on the words, no mask), then an MLP.
        let a = self.cross_attn_query_text_query1_text.forward(with_pe(q1.clone(), p1), t_word.clone(), t_word.clone(), None);
        let q1 = self.norm_query1_2.forward(q1 + a);
        let q1 = self.norm_query1_3.forward(q1.clone() + self.mlp_query1_2.forward(q1));
        let a = self.cross_attn_query_text_query2_text.forward(with_pe(q2.clone(), p2), t_word.clone(), t_word, None);
        let q2 = self.norm_query2_2.forward(q2 + a);
        let q2 = self.norm_query2_3.forward(q2.clone() + self.mlp_query2_2.forward(q2));

        // The subspaces read each other; q2 sees the already updated q1 (code order).
        let a = self.cross_attn_query_query_query1_query2.forward(with_pe(q1.clone(), p1), with_pe(q2.clone(), p2), q2.clone(), None);
        let q1 = self.norm_query1_4.forward(q1 + a);
        let q1 = self.norm_query1_5.forward(q1.clone() + self.mlp_query1_3.forward(q1));
        let a = self.cross_attn_query_query_query2_query1.forward(with_pe(q2.clone(), p2), with_pe(q1.clone(), p1), q1.clone(), None);
        let q2 = self.norm_query2_4.forward(q2 + a);
        let q2 = self.norm_query2_5.forward(q2.clone() + self.mlp_query2_3.forward(q2));
        (q1, q2)
    }
}
