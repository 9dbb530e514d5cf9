//! The cascaded prompter against the authors' code (`prompter_io.safetensors`, eval mode).

mod common;

use common::*;
use rsrefseg::checkpoint::keys::prompter::TABLE;
use rsrefseg::checkpoint::{load_module, LoadOptions};
use rsrefseg::prompter::{text_pool, CascadedPrompter, PrompterConfig};

/// The fixture's prompter: d1 = 64, grid 8, D2 = 32, heads 4, internal 32, mlp 32.
pub fn fixture_config() -> PrompterConfig {
    PrompterConfig::new(64, 32, 8).with_num_heads(4).with_internal_dim(32).with_mlp_dim(32)
}

fn load() -> CascadedPrompter<B> {
    let (canonical, _) = TABLE.apply(read_reference("prompter.safetensors")).unwrap();
    let model = fixture_config().init::<B>(&dev());
    let (model, report) = load_module(model, &canonical, &dev(), LoadOptions::default(), "prompter").unwrap();
    assert!(report.is_clean(), "{report}");
    model
}

#[test]
fn prompter_matches_reference_in_eval_mode() {
    let io = read_reference("prompter_io.safetensors");
    let model = load();
    assert_close("mid_textpool_init", text_pool(tensor::<3>(&io["in_t_word"]), 3), &io["mid_textpool_init"], 1e-6);
    let m = io["in_mask_size"].data[0] as usize;
    let out = model.forward(
        tensor::<3>(&io["in_v"]),
        tensor::<3>(&io["in_t_word"]),
        tensor::<2>(&io["in_t_sent"]),
        tensor::<1>(&io["in_logit_scale"]),
        tensor::<1>(&io["in_logit_bias"]),
        m,
    );
    assert_close("out_t1", out.t1, &io["out_t1"], 1e-4);
    assert_close("out_t2", out.t2, &io["out_t2"], 1e-4);
    assert_close("mid_stage1_img_tokens", out.first_order_tokens, &io["mid_stage1_img_tokens"], 1e-4);
    assert_close("out_refined_img_feat_map", out.refined.clone(), &io["out_refined_img_feat_map"], 1e-4);
    assert_close("out_sparse_prompts", out.sparse, &io["out_sparse_prompts"], 1e-4);
    let head = model.dense_prompt_conv.as_ref().unwrap();
    assert_close("mid_dense_conv_out", head.features(out.refined), &io["mid_dense_conv_out"], 1e-4);
    assert_close("out_dense_prompts", out.dense.unwrap(), &io["out_dense_prompts"], 1e-4);
}

#[test]
fn dense_prompt_in_training_mode_uses_batch_statistics_like_pytorch() {
    type AB = burn::backend::Autodiff<B>;
    let io = read_reference("prompter_io.safetensors");
    let (canonical, _) = TABLE.apply(read_reference("prompter.safetensors")).unwrap();
    let model = fixture_config().init::<AB>(&dev());
    let (model, _) = load_module(model, &canonical, &dev(), LoadOptions::default(), "prompter").unwrap();
    let t = |name: &str| -> burn::tensor::Tensor<AB, 3> { burn::tensor::Tensor::from_inner(tensor::<3>(&io[name])) };
    let out = model.forward(
        t("in_v"),
        t("in_t_word"),
        burn::tensor::Tensor::from_inner(tensor::<2>(&io["in_t_sent"])),
        burn::tensor::Tensor::from_inner(tensor::<1>(&io["in_logit_scale"])),
        burn::tensor::Tensor::from_inner(tensor::<1>(&io["in_logit_bias"])),
        io["in_mask_size"].data[0] as usize,
    );
    assert_close("train_out_dense_prompts", out.dense.unwrap().inner(), &io["train_out_dense_prompts"], 1e-4);
    let bn = &model.dense_prompt_conv.as_ref().unwrap().bn;
    assert_close("train_bn_running_mean_after", bn.running_mean.value_sync().inner(), &io["train_bn_running_mean_after"], 1e-5);
    assert_close("train_bn_running_var_after", bn.running_var.value_sync().inner(), &io["train_bn_running_var_after"], 1e-5);
}
