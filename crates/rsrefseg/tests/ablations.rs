//! The paper's ablation switches build and run: single-stage prompter, no dense prompt,
//! positional embeddings off, zero / learnable query initialisation, other n_t / n_p / depths.

mod common;

use burn::module::Module;
use burn::tensor::{Int, Tensor};
use common::*;
use rsrefseg::checkpoint::param_specs;
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::prompter::QueryInit;

fn run(config: &RsRefSegConfig) -> (usize, Vec<String>, [usize; 4], bool) {
    let model = config.init::<B>(&dev()).unwrap();
    let x01 = Tensor::<B, 4>::random([1, 3, 128, 128], burn::tensor::Distribution::Uniform(0.0, 1.0), &dev());
    let ids = Tensor::<B, 2, Int>::from_ints([[43, 19, 28, 1]], &dev());
    let out = model.forward(x01, ids, None, false);
    let names = param_specs::<B, _>(&model.prompter).into_iter().map(|p| p.name).collect();
    (model.num_params(), names, out.mask_logits.dims(), out.prompter.dense.is_some())
}

#[test]
fn ablation_switches_change_the_model_as_named() {
    let base = RsRefSegConfig::reference_dev();
    let (n_base, names, shape, dense) = run(&base);
    assert_eq!(shape, [1, 1, 32, 32]);
    assert!(dense && names.iter().any(|n| n.starts_with("queries1_to_img_attn_layers.1.")));

    // Single-stage prompter: no first-order blocks.
    let mut c = base.clone();
    c.prompter.first_order_depth = 0;
    let (n, names, shape, _) = run(&c);
    assert!(n < n_base && !names.iter().any(|n| n.starts_with("queries1_to_img_attn_layers")));
    assert_eq!(shape, [1, 1, 32, 32]);

    // No dense prompt: SAM gets its "no mask" embedding; the conv head is gone.
    let mut c = base.clone();
    c.prompter.dense_prompt = false;
    let (_, names, shape, dense) = run(&c);
    assert!(!dense && !names.iter().any(|n| n.starts_with("dense_prompt_conv")));
    assert_eq!(shape, [1, 1, 32, 32]);

    // Positional embeddings off everywhere; zero / learnable initialisations; other sizes.
    let mut c = base.clone();
    c.prompter.text_query_pe = false;
    c.prompter.prompt_pe = false;
    c.prompter.img_pe = false;
    c.prompter.text_query_init = QueryInit::Zero;
    c.prompter.num_text_queries = 2;
    c.prompter.num_prompts = 4;
    c.prompter.decomposition_depth = 1;
    let (_, names, shape, _) = run(&c);
    assert!(!names.iter().any(|n| n.contains("pe")), "{names:?}");
    assert!(names.iter().any(|n| n == "prompt_embedding"));
    assert_eq!(shape, [1, 1, 32, 32]);

    let mut c = base;
    c.prompter.text_query_init = QueryInit::Learnable;
    c.prompter.prompt_init = QueryInit::Zero;
    let (_, names, _, _) = run(&c);
    assert!(names.iter().any(|n| n == "text_query_embedding1") && !names.iter().any(|n| n == "prompt_embedding"));
}
