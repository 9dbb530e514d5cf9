//! SigLIP towers against the reference fixtures (HF transformers 4.53.1 on a tiny random model,
//! wrapped with PEFT LoRA as RSRefSeg 2 does; `/shared/fixtures/reference/README.md`).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rsrefseg::checkpoint::keys::{section, KeyTable, Transform};
use rsrefseg::checkpoint::{load_module, LoadOptions};
use rsrefseg::encoders::{Siglip, SiglipConfig};

/// The fixture's tiny SigLIP (`config.json` → `tiny_config.siglip`).
fn tiny_config() -> SiglipConfig {
    SiglipConfig::from_hf_json(
        r#"{"model_type":"siglip",
        "text_config":{"vocab_size":96,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                       "num_attention_heads":4,"max_position_embeddings":16},
        "vision_config":{"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                         "num_attention_heads":4,"image_size":64,"patch_size":8}}"#,
    )
    .unwrap()
}

/// The SigLIP part of the released-checkpoint layout: merge PEFT LoRA, strip wrappers.
const RELEASE_SIGLIP: KeyTable = KeyTable {
    format: "RSRefSeg 2 release (SigLIP part)",
    transforms: &[
        // The reference never applies the LoRA on the MAP head's out_proj (torch's
        // MultiheadAttention reads `out_proj.weight` directly).
        Transform::Drop(r".*head\.attention\.out_proj\.lora_[AB]\.default\.weight"),
        Transform::MergePeftLora,
        Transform::StripInfix("base_model.model."),
    ],
    renames: &[
        (r"^clip_vision_encoder\.model\.", "vision_model."),
        (r"^clip_text_encoder\.model\.", "text_model."),
        (r"^clip_text_encoder\.logit_", "logit_"),
    ],
    ignored: &[],
};

fn load() -> Siglip<B> {
    let file = read_reference("full_model.safetensors");
    let mut clip = section(&file, "clip_vision_encoder.");
    clip = clip.into_iter().map(|(k, v)| (format!("clip_vision_encoder.{k}"), v)).collect();
    clip.extend(section(&file, "clip_text_encoder.").into_iter().map(|(k, v)| (format!("clip_text_encoder.{k}"), v)));
    let (canonical, ignored) = RELEASE_SIGLIP.apply(clip).unwrap();
    assert!(ignored.is_empty());
    let model = Siglip::<B>::new(&tiny_config(), &dev()).unwrap();
    let (model, report) = load_module(model, &canonical, &dev(), LoadOptions::default(), "siglip").unwrap();
    assert!(report.is_clean(), "{report}");
    model
}

fn ids(name: &str, io: &rsrefseg::checkpoint::TensorMap) -> Tensor<B, 2, Int> {
    let t = &io[name];
    let data: Vec<i64> = t.data.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, t.shape.clone()), &dev())
}

#[test]
fn vision_tower_matches_reference() {
    let io = read_reference("full_io.safetensors");
    let model = load();
    let v = model.vision_model.forward(tensor::<4>(&io["clip_pixel_values"]));
    assert_close("v", v.clone(), &io["v"], 1e-4);
    // MAP head (unused by RSRefSeg 2) with the reference's quirk: its out_proj LoRA is not applied.
    let pooled = model.vision_model.pool(v).unwrap();
    assert_close("v_pooler_unused", pooled, &io["v_pooler_unused"], 1e-4);
}

#[test]
fn text_tower_matches_reference() {
    let io = read_reference("full_io.safetensors");
    let model = load();
    let out = model.text_model.forward(ids("input_ids", &io), Some(ids("attention_mask", &io)));
    assert_close("t_word", out.t_word, &io["t_word"], 1e-4);
    assert_close("t_sent", out.t_sent, &io["t_sent"], 1e-4);
    // Right-padded batch: the pooled vector of the shorter sentence is taken at a <pad> position.
    let out = model
        .text_model
        .forward(ids("textpad_input_ids", &io), Some(ids("textpad_attention_mask", &io)));
    assert_close("textpad_t_word", out.t_word, &io["textpad_t_word"], 1e-4);
    assert_close("textpad_t_sent", out.t_sent, &io["textpad_t_sent"], 1e-4);
    let scale = model.logit_scale.val();
    let full = read_reference("full_model.safetensors");
    assert_close("logit_scale", scale, &full["clip_text_encoder.base_model.model.logit_scale"], 0.0);
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let file = read_reference("full_model.safetensors");
    let mut clip: rsrefseg::checkpoint::TensorMap = file
        .iter()
        .filter(|(k, _)| k.starts_with("clip_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    clip.remove("clip_text_encoder.base_model.model.model.final_layer_norm.weight");
    let key = "clip_vision_encoder.base_model.model.model.post_layernorm.bias";
    clip.get_mut(key).unwrap().shape = vec![8, 8];
    let (canonical, _) = RELEASE_SIGLIP.apply(clip).unwrap();
    let model = Siglip::<B>::new(&tiny_config(), &dev()).unwrap();
    let err = load_module(model, &canonical, &dev(), LoadOptions::default(), "siglip").unwrap_err().to_string();
    assert!(err.contains("text_model.final_layer_norm.weight: expected shape [64]"), "{err}");
    assert!(err.contains("vision_model.post_layernorm.bias: expected shape [64], found [8, 8]"), "{err}");
}

// ---- Fixtures generated by tools/fixtures/gen_fixtures.py (HF SiglipModel safetensors layout) ----

fn load_hf_tiny() -> Siglip<B> {
    let dir = fixture_path("siglip_tiny");
    let config = SiglipConfig::from_hf_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let file = rsrefseg::checkpoint::read_tensors(&dir.join("model.safetensors")).unwrap();
    let (canonical, _) = rsrefseg::checkpoint::keys::siglip_hf::TABLE.apply(file).unwrap();
    let model = Siglip::<B>::new(&config, &dev()).unwrap();
    let (model, report) = load_module(model, &canonical, &dev(), LoadOptions::default(), "siglip").unwrap();
    assert!(report.is_clean(), "{report}");
    model
}

#[test]
fn hf_checkpoint_vision_native_and_interpolated_sizes() {
    let io = rsrefseg::checkpoint::read_tensors(&fixture_path("siglip_io.safetensors")).unwrap();
    let model = load_hf_tiny();
    let v = model.vision_model.forward(tensor::<4>(&io["pixel_values"]));
    assert_close("vision_last_hidden_state", v.clone(), &io["vision_last_hidden_state"], 1e-4);
    assert_close("vision_pooler_output", model.vision_model.pool(v).unwrap(), &io["vision_pooler_output"], 1e-4);
    // 48² input: 6×6 grid from the native 4×4 position table (bicubic, as transformers).
    let tower = model.vision_model.prepare_grid(6, 6);
    let v = tower.forward(tensor::<4>(&io["pixel_values_48"]));
    assert_close("vision48_last_hidden_state", v, &io["vision48_last_hidden_state"], 1e-4);
    // Non-square 48×32 input: 6×4 grid.
    let tower = tower.prepare_grid(6, 4);
    let v = tower.forward(tensor::<4>(&io["pixel_values_48x32"]));
    assert_close("vision48x32_last_hidden_state", v, &io["vision48x32_last_hidden_state"], 1e-4);
}

#[test]
fn hf_checkpoint_text_padded_and_single() {
    let io = rsrefseg::checkpoint::read_tensors(&fixture_path("siglip_io.safetensors")).unwrap();
    let model = load_hf_tiny();
    let out = model.text_model.forward(ids("input_ids", &io), Some(ids("attention_mask", &io)));
    assert_close("text_last_hidden_state", out.t_word, &io["text_last_hidden_state"], 1e-4);
    assert_close("text_pooler_output", out.t_sent, &io["text_pooler_output"], 1e-4);
    let out = model.text_model.forward(ids("input_ids_single", &io), None);
    assert_close("text_single_last_hidden_state", out.t_word, &io["text_single_last_hidden_state"], 1e-4);
    assert_close("text_single_pooler_output", out.t_sent, &io["text_single_pooler_output"], 1e-4);
    assert_close("logit_bias", model.logit_bias.val(), &io["logit_bias"], 1e-6);
}
