//! LoRA layers: merge equivalence, the released PEFT layout loaded unmerged into SigLIP and SAM 2
//! (reference fixture set `dev`, `/shared/fixtures/reference`), frozen bases under autodiff, and
//! merge-then-export against the file merged on the host.

mod common;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use common::*;
use rsrefseg::checkpoint::keys::{sam2_original, section, KeyTable, Transform};
use rsrefseg::checkpoint::{load_module, module_tensors, HostTensor, LoadOptions, TensorMap};
use rsrefseg::encoders::{Siglip, SiglipConfig};
use rsrefseg::nn::lora::{
    freeze_base, trainable_parameter_names, LoraConfig, LoraConv2d, LoraLinear, LoraModule, SAM2_TRAINABLE,
    SIGLIP_TRAINABLE,
};
use rsrefseg::sam::{Sam2, Sam2Config};
use std::collections::BTreeSet;

type AD = Autodiff<B>;

fn max_diff<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
    (a - b).abs().max().into_scalar().elem::<f32>()
}

// ---- Single layers -------------------------------------------------------------------------

#[test]
fn linear_merge_equals_unmerged_forward() {
    let base = LinearConfig::new(5, 7).init::<B>(&dev());
    let x = Tensor::<B, 3>::random([2, 4, 5], Distribution::Normal(0.0, 1.0), &dev());
    // (Computing with `base` first also initialises its lazy parameters, so that the clone shares them.)
    let expected = base.forward(x.clone());
    let layer: LoraLinear<B> = base.clone().into();
    assert_eq!(max_diff(layer.forward(x.clone()), expected), 0.0, "no adapter: plain Linear");

    // alpha / r = 2; a fresh adapter (B = 0) changes nothing.
    let mut layer = layer.attach(3, 6.0, &dev());
    assert!(layer.has_adapter());
    assert!(max_diff(layer.forward(x.clone()), base.forward(x.clone())) < 1e-7);

    // burn layout [r, out]; canonical (out, r).
    layer.lora_B.as_mut().unwrap().weight =
        Param::from_tensor(Tensor::random([3, 7], Distribution::Normal(0.0, 0.5), &dev()));
    let unmerged = layer.forward(x.clone());
    assert!(max_diff(unmerged.clone(), base.forward(x.clone())) > 1e-2, "the adapter must matter");
    let merged = layer.merge();
    assert!(!merged.has_adapter());
    let d = max_diff(merged.forward(x), unmerged);
    assert!(d <= 1e-5, "merged vs unmerged: {d}");
}

#[test]
fn conv_merge_equals_unmerged_forward() {
    let base = Conv2dConfig::new([5, 7], [1, 1]).init::<B>(&dev());
    let x = Tensor::<B, 4>::random([2, 5, 3, 4], Distribution::Normal(0.0, 1.0), &dev());
    let expected = base.forward(x.clone());
    let layer: LoraConv2d<B> = base.clone().into();
    // Same convolution, computed as one matmul (rsrefseg::nn::conv): equal up to summation order.
    assert!(max_diff(layer.forward(x.clone()), expected) <= 1e-6, "no adapter: plain Conv2d");

    let mut layer = layer.attach(3, 6.0, &dev());
    // lora_B starts at zero: the adapter adds nothing yet.
    assert!(max_diff(layer.forward(x.clone()), base.forward(x.clone())) <= 1e-6);
    layer.lora_B.as_mut().unwrap().weight =
        Param::from_tensor(Tensor::random([7, 3, 1, 1], Distribution::Normal(0.0, 0.5), &dev()));
    let unmerged = layer.forward(x.clone());
    assert!(max_diff(unmerged.clone(), base.forward(x.clone())) > 1e-2, "the adapter must matter");
    let merged = layer.merge();
    assert!(!merged.has_adapter());
    let d = max_diff(merged.forward(x), unmerged);
    assert!(d <= 1e-5, "merged vs unmerged: {d}");
}

#[test]
fn adapted_layers_freeze_their_base() {
    let dev = Default::default();
    let lin: LoraLinear<AD> = LinearConfig::new(5, 7).init::<AD>(&dev).into();
    let lin = lin.attach(3, 3.0, &dev);
    let conv: LoraConv2d<AD> = Conv2dConfig::new([5, 7], [1, 1]).init::<AD>(&dev).into();
    let conv = conv.attach(3, 3.0, &dev);
    let x = Tensor::<AD, 2>::random([4, 5], Distribution::Normal(0.0, 1.0), &dev);
    let y = Tensor::<AD, 4>::random([1, 5, 2, 2], Distribution::Normal(0.0, 1.0), &dev);
    let loss = lin.forward(x).sum() + conv.forward(y).sum();
    let grads = loss.backward();
    assert!(lin.weight.val().grad(&grads).is_none());
    assert!(lin.bias.as_ref().unwrap().val().grad(&grads).is_none());
    assert!(lin.lora_A.as_ref().unwrap().weight.val().grad(&grads).is_some());
    assert!(lin.lora_B.as_ref().unwrap().weight.val().grad(&grads).is_some());
    assert!(conv.weight.val().grad(&grads).is_none());
    assert!(conv.bias.as_ref().unwrap().val().grad(&grads).is_none());
    assert!(conv.lora_A.as_ref().unwrap().weight.val().grad(&grads).is_some());
    assert!(conv.lora_B.as_ref().unwrap().weight.val().grad(&grads).is_some());
}

#[test]
fn config_serialises_with_reference_defaults() {
    let config = LoraConfig::reference();
    assert_eq!((config.rank, config.alpha, config.scaling()), (16, 16.0, 1.0));
    let json = serde_json::to_string(&config).unwrap();
    let back: LoraConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.targets, config.targets);
}

// ---- The released PEFT layout, unmerged --------------------------------------------------------

/// The fixture's tiny SigLIP (`config.json` → `tiny_config.siglip`).
fn tiny_siglip_config() -> SiglipConfig {
    SiglipConfig::from_hf_json(
        r#"{"model_type":"siglip",
        "text_config":{"vocab_size":96,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                       "num_attention_heads":4,"max_position_embeddings":16},
        "vision_config":{"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                         "num_attention_heads":4,"image_size":64,"patch_size":8}}"#,
    )
    .unwrap()
}

/// Drop the MAP head's out_proj LoRA: the reference never applies it (torch's MultiheadAttention
/// reads `out_proj.weight` directly), so that layer is not LoRA-capable.
const DROP_MAP_OUT_PROJ_LORA: Transform = Transform::Drop(r".*head\.attention\.out_proj\.lora_[AB]\.default\.weight");
const SIGLIP_RENAMES: &[(&str, &str)] = &[
    (r"^clip_vision_encoder\.model\.", "vision_model."),
    (r"^clip_text_encoder\.model\.", "text_model."),
    (r"^clip_text_encoder\.logit_", "logit_"),
];

const SIGLIP_ADAPTERS: KeyTable = KeyTable {
    format: "RSRefSeg 2 release, SigLIP part, LoRA unmerged",
    transforms: &[DROP_MAP_OUT_PROJ_LORA, Transform::PeftToAdapters, Transform::StripInfix("base_model.model.")],
    renames: SIGLIP_RENAMES,
    ignored: &[],
};

const SIGLIP_MERGED: KeyTable = KeyTable {
    format: "RSRefSeg 2 release, SigLIP part, LoRA merged",
    transforms: &[DROP_MAP_OUT_PROJ_LORA, Transform::MergePeftLora, Transform::StripInfix("base_model.model.")],
    renames: SIGLIP_RENAMES,
    ignored: &[],
};

const SAM_ADAPTERS: KeyTable = KeyTable {
    format: "RSRefSeg 2 release, SAM part, LoRA unmerged",
    transforms: &[Transform::PeftToAdapters, Transform::StripInfix("base_model.model.")],
    renames: sam2_original::TABLE.renames,
    ignored: sam2_original::TABLE.ignored,
};

const SAM_MERGED: KeyTable = KeyTable {
    format: "RSRefSeg 2 release, SAM part, LoRA merged",
    transforms: &[Transform::MergePeftLora, Transform::StripInfix("base_model.model.")],
    renames: sam2_original::TABLE.renames,
    ignored: sam2_original::TABLE.ignored,
};

fn siglip_section(file: &TensorMap) -> TensorMap {
    file.iter().filter(|(k, _)| k.starts_with("clip_")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn siglip_canonical(table: &KeyTable) -> TensorMap {
    let (canonical, ignored) = table.apply(siglip_section(&read_reference("full_model.safetensors"))).unwrap();
    assert!(ignored.is_empty());
    canonical
}

fn sam_canonical(table: &KeyTable) -> TensorMap {
    let (canonical, _) = table.apply(section(&read_reference("full_model.safetensors"), "backbone.model.")).unwrap();
    canonical
}

fn siglip_unmerged<Bk: Backend>(device: &Bk::Device, trainable: bool) -> Siglip<Bk> {
    let model = Siglip::<Bk>::new(&tiny_siglip_config(), device).unwrap().attach_lora(&LoraConfig::reference(), device);
    let model = if trainable { freeze_base(model, SIGLIP_TRAINABLE) } else { model };
    let (model, report) =
        load_module(model, &siglip_canonical(&SIGLIP_ADAPTERS), device, LoadOptions::default(), "siglip").unwrap();
    assert!(report.is_clean(), "{report}");
    model
}

fn sam_unmerged<Bk: Backend>(device: &Bk::Device, trainable: bool) -> Sam2<Bk> {
    let model = Sam2Config::reference_dev().init::<Bk>(device).attach_lora(&LoraConfig::reference(), device);
    let model = if trainable { freeze_base(model, SAM2_TRAINABLE) } else { model };
    let (model, report) = load_module(model, &sam_canonical(&SAM_ADAPTERS), device, LoadOptions::default(), "sam").unwrap();
    assert!(report.is_clean(), "{report}");
    model
}

fn ids<Bk: Backend>(t: &HostTensor, device: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let data: Vec<i64> = t.data.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, t.shape.clone()), device)
}

#[test]
fn siglip_with_unmerged_release_adapters_matches_reference() {
    let io = read_reference("full_io.safetensors");
    let model = siglip_unmerged::<B>(&dev(), false);
    // 2 layers × q/k/v/out per tower, the text head, the vision MAP head's fc1/fc2.
    let layers = model.lora_layers();
    assert_eq!(layers.len(), 19, "{layers:?}");
    assert!(layers.contains(&"text_model.head".to_string()));

    let v = model.vision_model.forward(tensor::<4>(&io["clip_pixel_values"]));
    assert_close("v", v.clone(), &io["v"], 1e-4);
    assert_close("v_pooler_unused", model.vision_model.pool(v).unwrap(), &io["v_pooler_unused"], 1e-4);
    let out = model
        .text_model
        .forward(ids(&io["input_ids"], &dev()), Some(ids(&io["attention_mask"], &dev())));
    assert_close("t_word", out.t_word, &io["t_word"], 1e-4);
    assert_close("t_sent", out.t_sent, &io["t_sent"], 1e-4);
}

#[test]
fn sam_with_unmerged_release_adapters_matches_reference() {
    let io = read_reference("full_io.safetensors");
    let model = sam_unmerged::<B>(&dev(), false);
    // 7 Hiera blocks × qkv/proj + 4 FPN convs.
    let layers = model.lora_layers();
    assert_eq!(layers.len(), 18, "{layers:?}");
    assert!(layers.contains(&"image_encoder.neck.convs.3.conv".to_string()));

    let f = model.encode_image(tensor::<4>(&io["sam_pixel_values"]));
    for (i, t) in f.backbone.trunk.iter().enumerate() {
        assert_close(&format!("sam_trunk_out{i}"), t.clone(), &io[&format!("sam_trunk_out{i}")], 1e-4);
    }
    assert_close("sam_fpn2", f.backbone.fpn[2].clone(), &io["sam_fpn2"], 1e-4);
    let hr = f.high_res.expect("high-res features");
    assert_close("sam_feat_s0", hr.feat_s0, &io["sam_feat_s0"], 1e-4);
    assert_close("sam_feat_s1", hr.feat_s1, &io["sam_feat_s1"], 1e-4);
    assert_close("sam_image_embed", f.image_embed, &io["sam_image_embed"], 1e-4);
}

fn assert_same_tensors(what: &str, actual: &TensorMap, expected: &TensorMap) {
    let a: BTreeSet<_> = actual.keys().collect();
    let e: BTreeSet<_> = expected.keys().collect();
    assert_eq!(a, e, "{what}: names");
    for (name, t) in expected {
        let got = &actual[name];
        assert_eq!(got.shape, t.shape, "{what}: {name}");
        let d = got.data.iter().zip(&t.data).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d <= 1e-5, "{what}: {name} differs by {d}");
    }
}

#[test]
fn merge_then_export_equals_merge_on_the_file() {
    let siglip = siglip_unmerged::<B>(&dev(), false).merge_lora();
    assert!(siglip.lora_layers().is_empty());
    assert_same_tensors("siglip", &module_tensors(&siglip), &siglip_canonical(&SIGLIP_MERGED));

    let sam = sam_unmerged::<B>(&dev(), false).merge_lora();
    assert!(sam.lora_layers().is_empty());
    assert_same_tensors("sam", &module_tensors(&sam), &sam_canonical(&SAM_MERGED));
}

// ---- Trainable set -------------------------------------------------------------------------

/// The reference's `trainable_parameter_names` (fixture `config.json`) of one section, in
/// canonical names.
fn reference_trainable(prefix_filter: &str, table: &KeyTable, strip: &str) -> BTreeSet<String> {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference_dir().join("config.json")).unwrap()).unwrap();
    let names: TensorMap = config["trainable_parameter_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .filter(|n| n.starts_with(prefix_filter))
        .map(|n| (n.strip_prefix(strip).unwrap().to_string(), HostTensor::new(vec![1], vec![0.0])))
        .collect();
    table.apply(names).unwrap().0.into_keys().collect()
}

#[test]
fn trainable_set_matches_reference_and_bases_get_no_gradient() {
    let dev = Default::default();
    let siglip = siglip_unmerged::<AD>(&dev, true);
    let trainable: BTreeSet<String> = trainable_parameter_names(&siglip).into_iter().collect();
    assert_eq!(trainable, reference_trainable("clip_", &SIGLIP_ADAPTERS, ""));

    let sam = sam_unmerged::<AD>(&dev, true);
    let trainable: BTreeSet<String> = trainable_parameter_names(&sam).into_iter().collect();
    assert_eq!(trainable, reference_trainable("backbone.model.", &SAM_ADAPTERS, "backbone.model."));

    // A backward pass through the text tower: adapters get gradients, frozen weights none.
    let io = read_reference("full_io.safetensors");
    let out = siglip.text_model.forward(ids(&io["input_ids"], &dev), Some(ids(&io["attention_mask"], &dev)));
    let grads = (out.t_word.sum() + out.t_sent.sum()).backward();
    let layer = &siglip.text_model.encoder.layers[0];
    let q = &layer.self_attn.q_proj;
    assert!(q.weight.val().grad(&grads).is_none());
    assert!(q.bias.as_ref().unwrap().val().grad(&grads).is_none());
    assert!(layer.mlp.fc1.weight.val().grad(&grads).is_none());
    assert!(siglip.text_model.final_layer_norm.gamma.val().grad(&grads).is_none());
    for lora in [q.lora_A.as_ref().unwrap(), q.lora_B.as_ref().unwrap()] {
        let g = lora.weight.val().grad(&grads).expect("LoRA gradient");
        assert!(g.abs().sum().into_scalar().elem::<f32>() > 0.0);
    }
    let head_b = siglip.text_model.head.lora_B.as_ref().unwrap();
    assert!(head_b.weight.val().grad(&grads).is_some());
}
