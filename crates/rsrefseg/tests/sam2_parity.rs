//! SAM 2.1 parity against the reference fixture set `dev` (`shared/fixtures/reference`): the
//! tiny random SAM 2.1 inside RSRefSeg 2's `full_model.safetensors`, run by Meta's `sam2` code.
//! Tolerance: |actual − expected| ≤ 1e-4 + 1e-4·|expected| (scale-aware for the mask logits).

use burn::tensor::{Int, Tensor, TensorData};
use rsrefseg::checkpoint::keys::{KeyTable, Transform};
use rsrefseg::checkpoint::{read_tensors, HostTensor, LoadError, LoadOptions, TensorMap};
use rsrefseg::sam::mask_decoder::{HighResFeatures, MaskDecoderInput};
use rsrefseg::sam::prompt_encoder::PointPrompts;
use rsrefseg::sam::{load_sam2_tensors, Sam2, Sam2Config};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The command line tool's default CPU backend.
type B = burn_flex::Flex;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn reference(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/reference")).join(name)
}

fn io() -> &'static TensorMap {
    static IO: OnceLock<TensorMap> = OnceLock::new();
    IO.get_or_init(|| read_tensors(&reference("full_io.safetensors")).expect("full_io.safetensors"))
}

/// The SAM 2 tensors of the RSRefSeg 2 state dict, with LoRA merged and the PEFT prefix removed:
/// original SAM 2 keys (`image_encoder.trunk…`).
fn sam_tensors() -> TensorMap {
    const PEFT: KeyTable = KeyTable {
        format: "RSRefSeg 2 SAM part (PEFT)",
        transforms: &[Transform::MergePeftLora, Transform::StripInfix("base_model.model.")],
        renames: &[],
        ignored: &[],
    };
    let all = read_tensors(&reference("full_model.safetensors")).expect("full_model.safetensors");
    let sam: TensorMap = all
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("backbone.model.").map(|k| (k.to_string(), v)))
        .collect();
    let (merged, ignored) = PEFT.apply(sam).expect("LoRA merge");
    assert!(ignored.is_empty());
    merged
}

fn model() -> Sam2<B> {
    let (model, report) =
        load_sam2_tensors::<B>(sam_tensors(), &Sam2Config::reference_dev(), &Default::default(), LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_clean(), "{report}");
    model
}

fn expected(name: &str) -> &'static HostTensor {
    io().get(name).unwrap_or_else(|| panic!("fixture tensor {name} missing"))
}

fn tensor<const D: usize>(name: &str) -> Tensor<B, D> {
    expected(name).to_tensor(&Default::default())
}

/// Compare with the reference fixture; returns the max abs difference (printed with
/// `--nocapture`).
fn check<const D: usize>(name: &str, actual: Tensor<B, D>) -> f32 {
    check_in(io(), name, actual)
}

fn check_in<const D: usize>(map: &TensorMap, name: &str, actual: Tensor<B, D>) -> f32 {
    let exp = map.get(name).unwrap_or_else(|| panic!("fixture tensor {name} missing"));
    let act = HostTensor::from_tensor(actual);
    assert_eq!(act.shape, exp.shape, "{name}: shape");
    let mut max_abs = 0f32;
    for (i, (a, e)) in act.data.iter().zip(&exp.data).enumerate() {
        let d = (a - e).abs();
        assert!(d <= ATOL + RTOL * e.abs(), "{name}[{i}]: {a} vs {e} (|d| = {d})");
        max_abs = max_abs.max(d);
    }
    println!("{name:32} max |diff| = {max_abs:.3e}");
    max_abs
}

#[test]
fn image_path_matches_reference() {
    let model = model();
    let f = model.encode_image(tensor("sam_pixel_values"));
    for (i, t) in f.backbone.trunk.iter().enumerate() {
        check(&format!("sam_trunk_out{i}"), t.clone());
    }
    assert_eq!(f.backbone.fpn.len(), 3, "scalp drops the stride-32 level");
    check("sam_fpn0_pre_conv_s0", f.backbone.fpn[0].clone());
    check("sam_fpn1_pre_conv_s1", f.backbone.fpn[1].clone());
    check("sam_fpn2", f.backbone.fpn[2].clone());
    let hr = f.high_res.clone().expect("high-res features");
    check("sam_feat_s0", hr.feat_s0);
    check("sam_feat_s1", hr.feat_s1);
    check("sam_image_embed", f.image_embed.clone());
    check("sam_image_pe", model.image_pe());
}

#[test]
fn prompt_encoder_and_decoder_match_reference() {
    let model = model();
    // Dense prompt → mask_downscaling.
    let dense = model.sam_prompt_encoder.forward(None, None, Some(tensor("prompter_dense_prompts")), 1);
    assert_eq!(dense.sparse.dims(), [1, 0, 32]);
    check("sam_dense_embed", dense.dense.clone());

    // Decoder on the reference image features (isolates the decoder from the encoder).
    let input = MaskDecoderInput {
        image_embeddings: tensor("sam_image_embed"),
        image_pe: tensor("sam_image_pe"),
        sparse_prompt_embeddings: tensor("prompter_sparse_prompts"),
        dense_prompt_embeddings: tensor("sam_dense_embed"),
        high_res_features: Some(HighResFeatures { feat_s0: tensor("sam_feat_s0"), feat_s1: tensor("sam_feat_s1") }),
        repeat_image: false,
    };
    let out = model.sam_mask_decoder.forward(input, false, false);
    check("dec_all_masks", out.all.masks.clone());
    check("dec_all_iou", out.all.iou_pred.clone());
    check("dec_obj_score_logits", out.object_score_logits.clone());
    check("dec_mask_token0", out.all.masks.clone().narrow(1, 0, 1));
    check("dec_stability_token0", model.sam_mask_decoder.stability_scores(out.all.masks.clone().narrow(1, 0, 1)));
    check("dec_selected_mask", out.masks.clone());
    check("dec_selected_iou", out.iou_pred.clone());
    let stable = model.sam_mask_decoder.stability_scores(out.all.masks.narrow(1, 0, 1)).greater_equal_elem(0.98);
    check("dec_is_stable", stable.float());

    // Training mode always returns token 0.
    let input = MaskDecoderInput {
        image_embeddings: tensor("sam_image_embed"),
        image_pe: tensor("sam_image_pe"),
        sparse_prompt_embeddings: tensor("prompter_sparse_prompts"),
        dense_prompt_embeddings: tensor("sam_dense_embed"),
        high_res_features: Some(HighResFeatures { feat_s0: tensor("sam_feat_s0"), feat_s1: tensor("sam_feat_s1") }),
        repeat_image: false,
    };
    check("dec_mask_token0", model.sam_mask_decoder.forward(input, false, true).masks);
}

#[test]
fn whole_sam_chain_matches_reference() {
    let model = model();
    let f = model.encode_image(tensor("sam_pixel_values"));
    let dense = model.sam_prompt_encoder.forward(None, None, Some(tensor("prompter_dense_prompts")), 1).dense;
    let out = model.decode(&f, tensor("prompter_sparse_prompts"), dense, false, false);
    check("dec_all_masks", out.all.masks);
    check("dec_selected_mask", out.masks);
    check("dec_selected_iou", out.iou_pred);
}

#[test]
fn stability_fallback_matches_reference() {
    let model = model();
    let dec = &model.sam_mask_decoder;
    let masks: Tensor<B, 4> = tensor("stabtest_in_masks");
    check("stabtest_scores", dec.stability_scores(masks.clone().narrow(1, 0, 1)));
    let (m, iou) = dec.dynamic_multimask_via_stability(masks, tensor("stabtest_in_iou"));
    check("stabtest_out_masks", m);
    check("stabtest_out_iou", iou);
}

#[test]
fn sparse_prompts_have_the_reference_layout() {
    // Points without a box get a padding point; boxes add two corner tokens.
    let model = model();
    let device = Default::default();
    let coords = Tensor::<B, 3>::from_data(TensorData::new(vec![10.0f32, 20.0, 64.0, 100.0], [1, 2, 2]), &device);
    let labels = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 0], [1, 2]), &device);
    let boxes = Tensor::<B, 2>::from_data(TensorData::new(vec![5.0f32, 6.0, 70.0, 80.0], [1, 4]), &device);
    let pe = &model.sam_prompt_encoder;
    let pts = PointPrompts { coords: coords.clone(), labels: labels.clone() };
    let only_points = pe.forward(Some(pts.clone()), None, None, 1);
    assert_eq!(only_points.sparse.dims(), [1, 3, 32]);
    assert_eq!(only_points.dense.dims(), [1, 32, 8, 8]);
    let both = pe.forward(Some(pts), Some(boxes.clone()), None, 1);
    assert_eq!(both.sparse.dims(), [1, 4, 32]);
    // The padding point is exactly `not_a_point_embed`.
    let pad = only_points.sparse.clone().narrow(1, 2, 1).reshape([32]);
    let want = pe.not_a_point_embed.weight.val().reshape([32]);
    assert!(pad.sub(want).abs().max().into_scalar() == 0.0);
    // Box corners equal points labelled 2 and 3 (without padding).
    let corners = Tensor::<B, 3>::from_data(TensorData::new(vec![5.0f32, 6.0, 70.0, 80.0], [1, 2, 2]), &device);
    let corner_labels = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![2i64, 3], [1, 2]), &device);
    let as_points = pe.forward(Some(PointPrompts { coords: corners, labels: corner_labels }), Some(boxes), None, 1);
    let a = as_points.sparse.clone().narrow(1, 0, 2);
    let b = as_points.sparse.narrow(1, 2, 2);
    assert!(a.sub(b).abs().max().into_scalar() < 1e-6);
}

#[test]
fn wrong_shape_names_the_tensor() {
    let mut t = sam_tensors();
    let key = "sam_mask_decoder.iou_token.weight";
    t.insert(key.to_string(), HostTensor::new(vec![1, 31], vec![0.0; 31]));
    let err = load_sam2_tensors::<B>(t, &Sam2Config::reference_dev(), &Default::default(), LoadOptions::default())
        .expect_err("mis-shaped tensor must fail");
    let LoadError::Mismatch { report, .. } = &err else { panic!("unexpected error {err}") };
    assert_eq!(report.mis_shaped, vec![(key.to_string(), vec![1, 32], vec![1, 31])]);
    let msg = err.to_string();
    assert!(msg.contains(key) && msg.contains("[1, 32]") && msg.contains("[1, 31]"), "{msg}");
}

#[test]
fn unknown_and_missing_tensors_are_reported() {
    let mut t = sam_tensors();
    t.remove("no_mem_embed");
    t.insert("sam_mask_decoder.extra.weight".into(), HostTensor::new(vec![1], vec![0.0]));
    // Video modules are ignored on purpose.
    t.insert("memory_encoder.out_proj.weight".into(), HostTensor::new(vec![1], vec![0.0]));
    let err = load_sam2_tensors::<B>(t, &Sam2Config::reference_dev(), &Default::default(), LoadOptions::default())
        .expect_err("must fail");
    let LoadError::Mismatch { report, .. } = err else { panic!() };
    assert_eq!(report.missing, vec![("no_mem_embed".to_string(), vec![1, 1, 32])]);
    assert_eq!(report.unexpected, vec![("sam_mask_decoder.extra.weight".to_string(), vec![1])]);
}

/// Original keys → HF `Sam2Model` keys, following transformers' `convert_sam2_to_hf.py`
/// (substring replacements in order, MLP layer renumbering, stacked point embeddings, shared PE).
fn to_hf_layout(original: &TensorMap) -> TensorMap {
    const SUBST: &[(&str, &str)] = &[
        ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
        ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
        ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
        ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
        ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
        ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
        ("mask_downscaling.0", "mask_embed.conv1"),
        ("mask_downscaling.1", "mask_embed.layer_norm1"),
        ("mask_downscaling.3", "mask_embed.conv2"),
        ("mask_downscaling.4", "mask_embed.layer_norm2"),
        ("mask_downscaling.6", "mask_embed.conv3"),
        ("point_embeddings", "point_embed"),
        ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
        ("sam_prompt_encoder", "prompt_encoder"),
        ("sam_mask_decoder", "mask_decoder"),
        ("image_encoder.neck", "vision_encoder.neck"),
        ("image_encoder", "vision_encoder.backbone"),
        ("patch_embed.proj", "patch_embed.projection"),
        ("no_mem_embed", "no_memory_embedding"),
        (".norm", ".layer_norm"),
        ("trunk.", ""),
        ("out_proj", "o_proj"),
    ];
    let mlp3 = regex::Regex::new(r"(output_hypernetworks_mlps\.\d+|pred_obj_score_head)\.layers\.(\d)").unwrap();
    let mlp2 = regex::Regex::new(r"\.mlp\.layers\.(\d)").unwrap();
    let mut out = TensorMap::new();
    let mut points = Vec::new();
    for (k, v) in original {
        let mut key = k.clone();
        for (a, b) in SUBST {
            if key.contains(a) {
                key = key.replace(a, b);
            }
        }
        key = mlp3
            .replace(&key, |c: &regex::Captures| {
                let new = match &c[2] { "0" => "proj_in", "1" => "layers.0", _ => "proj_out" };
                format!("{}.{new}", &c[1])
            })
            .into_owned();
        key = mlp2
            .replace(&key, |c: &regex::Captures| if &c[1] == "0" { ".mlp.proj_in".to_string() } else { ".mlp.proj_out".to_string() })
            .into_owned();
        key = key.replace(".conv.", ".");
        if let Some(i) = key.strip_prefix("prompt_encoder.point_embed.").and_then(|r| r.strip_suffix(".weight")) {
            points.push((i.parse::<usize>().unwrap(), v.clone()));
            continue;
        }
        out.insert(key, v.clone());
    }
    points.sort_by_key(|(i, _)| *i);
    let d = points[0].1.shape[1];
    let data: Vec<f32> = points.iter().flat_map(|(_, t)| t.data.clone()).collect();
    out.insert("prompt_encoder.point_embed.weight".into(), HostTensor::new(vec![points.len(), d], data));
    let pe = out["prompt_encoder.shared_embedding.positional_embedding"].clone();
    out.insert("shared_image_embedding.positional_embedding".into(), pe);
    out
}

#[test]
fn hf_layout_loads_to_the_same_parameters() {
    let original = sam_tensors();
    let hf = to_hf_layout(&original);
    assert!(hf.keys().any(|k| k == "vision_encoder.backbone.blocks.1.layer_norm1.weight"));
    assert!(hf.keys().any(|k| k == "mask_decoder.transformer.layers.0.cross_attn_token_to_image.o_proj.weight"));
    assert!(hf.keys().any(|k| k == "mask_decoder.output_hypernetworks_mlps.2.proj_out.bias"));
    assert!(hf.keys().any(|k| k == "vision_encoder.neck.convs.1.weight"));
    let config = Sam2Config::reference_dev();
    let device = Default::default();
    let (a, _) = load_sam2_tensors::<B>(original, &config, &device, LoadOptions::default()).unwrap();
    let (b, report) = load_sam2_tensors::<B>(hf, &config, &device, LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_clean(), "{report}");
    let (pa, pb) = (rsrefseg::checkpoint::module_tensors(&a), rsrefseg::checkpoint::module_tensors(&b));
    assert_eq!(pa.len(), pb.len());
    for (k, v) in &pa {
        assert_eq!(Some(v), pb.get(k), "{k}");
    }

    // The tied Fourier matrix may be saved under either name only.
    let mut hf = to_hf_layout(&sam_tensors());
    hf.remove("shared_image_embedding.positional_embedding");
    let (c, _) = load_sam2_tensors::<B>(hf, &config, &device, LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rsrefseg::checkpoint::module_tensors(&c), pa);
}

#[test]
fn original_layout_under_a_model_prefix_loads() {
    // `torch.load(ckpt)["model"]` flattened with its key, plus the video modules it carries.
    let mut t: TensorMap = sam_tensors().into_iter().map(|(k, v)| (format!("model.{k}"), v)).collect();
    t.insert("model.memory_attention.layers.0.norm1.weight".into(), HostTensor::new(vec![1], vec![0.0]));
    t.insert("model.maskmem_tpos_enc".into(), HostTensor::new(vec![1], vec![0.0]));
    let (_, report) = load_sam2_tensors::<B>(t, &Sam2Config::reference_dev(), &Default::default(), LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_clean(), "{report}");
}

#[test]
fn presets_have_the_released_sizes() {
    // Parameter counts of the image path (reference §11.3: tiny 31.44 M, small 38.54 M; the
    // larger presets are left out to keep the test light).
    use burn::module::Module;
    let device = Default::default();
    for (config, millions) in [
        (Sam2Config::tiny(), 31.44),
        (Sam2Config::small(), 38.54),
    ] {
        let n = config.init::<B>(&device).num_params() as f64 / 1e6;
        assert!((n - millions).abs() < 0.01, "{n} M vs {millions} M");
        println!("SAM 2.1 preset: {n:.2} M parameters");
    }
}

// ---------------------------------------------------------------------------------------------
// Unit fixtures (`tests/fixtures`, see its README): a tiny SAM 2.1 (S = 160, windows [8, 6, 6, 3]
// so that windows are padded in blocks 2, 3, 5 and 6) saved in Meta's `.pt` format and in HF
// `Sam2Model` layout, with encoder, prompt-encoder and decoder cases run by `sam2`.

fn unit(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn unit_io() -> &'static TensorMap {
    static IO: OnceLock<TensorMap> = OnceLock::new();
    IO.get_or_init(|| read_tensors(&unit("sam2_io.safetensors")).expect("sam2_io.safetensors"))
}

fn unit_tensor<const D: usize>(name: &str) -> Tensor<B, D> {
    unit_io().get(name).unwrap_or_else(|| panic!("{name} missing")).to_tensor(&Default::default())
}

fn unit_int<const D: usize>(name: &str) -> Tensor<B, D, Int> {
    let t = unit_io().get(name).unwrap_or_else(|| panic!("{name} missing"));
    let data: Vec<i64> = t.data.iter().map(|&v| v as i64).collect();
    Tensor::from_data(TensorData::new(data, t.shape.clone()), &Default::default())
}

/// `sam2.1_hiera_t.yaml` with the overrides listed in `tests/fixtures/README.md`.
fn unit_config() -> Sam2Config {
    let hiera = rsrefseg::sam::hiera::HieraConfig::new()
        .with_embed_dim(8)
        .with_num_heads(1)
        .with_stages(vec![1, 2, 3, 1])
        .with_window_spec(vec![8, 6, 6, 3])
        .with_global_att_blocks(vec![4])
        .with_window_pos_embed_bkg_spatial_size([5, 5]);
    Sam2Config::new(hiera).with_image_size(160).with_d_model(32)
}

fn unit_model(file: &str) -> Sam2<B> {
    let tensors = read_tensors(&unit(file)).unwrap_or_else(|e| panic!("{e}"));
    let (model, report) = load_sam2_tensors::<B>(tensors, &unit_config(), &Default::default(), LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.is_clean(), "{report}");
    model
}

fn unit_decoder_input(sparse: &str, batch: usize) -> MaskDecoderInput<B> {
    let rep = |t: Tensor<B, 4>| Tensor::cat(vec![t; batch], 0);
    let dense = if batch == 1 { unit_tensor("pe_mask_dense") } else { rep(unit_tensor("pe_pb_dense")) };
    MaskDecoderInput {
        image_embeddings: rep(unit_tensor("image_embed")),
        image_pe: unit_tensor("dense_pe"),
        sparse_prompt_embeddings: unit_tensor(sparse),
        dense_prompt_embeddings: dense,
        high_res_features: Some(HighResFeatures {
            feat_s0: rep(unit_tensor("feat_s0")),
            feat_s1: rep(unit_tensor("feat_s1")),
        }),
        repeat_image: false,
    }
}

#[test]
fn unit_tiny_sam_hf_layout_matches_sam2() {
    let model = unit_model("sam2_tiny/sam2_tiny_hf.safetensors");
    let io = unit_io();

    // Image encoder: windowed blocks with padding, q-pool, a global block.
    let f = model.encode_image(unit_tensor("pixel_values"));
    for (i, t) in f.backbone.trunk.iter().enumerate() {
        check_in(io, &format!("trunk_out{i}"), t.clone());
    }
    let all_levels = model.image_encoder.neck.forward(f.backbone.trunk.clone());
    for (i, t) in all_levels.into_iter().enumerate() {
        check_in(io, &format!("fpn{i}"), t);
    }
    let hr = f.high_res.clone().unwrap();
    check_in(io, "feat_s0", hr.feat_s0);
    check_in(io, "feat_s1", hr.feat_s1);
    check_in(io, "no_mem_embed", model.no_mem_embed.val());
    check_in(io, "image_embed", f.image_embed.clone());
    check_in(io, "dense_pe", model.image_pe());

    // Prompt encoder: mask; points + box; points only (padding point).
    let pe = &model.sam_prompt_encoder;
    let m = pe.forward(None, None, Some(unit_tensor("pe_mask_in")), 1);
    assert_eq!(m.sparse.dims(), [1, 0, 32]);
    check_in(io, "pe_mask_dense", m.dense);
    let points = || PointPrompts { coords: unit_tensor("pe_points_coords"), labels: unit_int("pe_points_labels") };
    let pb = pe.forward(Some(points()), Some(unit_tensor("pe_box")), None, 1);
    check_in(io, "pe_pb_sparse", pb.sparse);
    check_in(io, "pe_pb_dense", pb.dense);
    let p = pe.forward(Some(points()), None, None, 1);
    check_in(io, "pe_p_sparse", p.sparse);
    check_in(io, "pe_pb_dense", p.dense);

    // Mask decoder with given sparse embeddings: all tokens, multimask, dynamic single mask.
    let dec = &model.sam_mask_decoder;
    let all = dec.predict_masks(unit_decoder_input("md_sparse_in", 1));
    check_in(io, "md_all_masks", all.masks.clone());
    check_in(io, "md_all_iou", all.iou_pred);
    check_in(io, "md_mask_tokens_out", all.mask_tokens_out);
    check_in(io, "md_obj_score_logits", all.object_score_logits);
    check_in(io, "md_stability_token0", dec.stability_scores(all.masks.narrow(1, 0, 1)));
    let multi = dec.forward(unit_decoder_input("md_sparse_in", 1), true, false);
    check_in(io, "md_multi_masks", multi.masks);
    check_in(io, "md_multi_iou", multi.iou_pred);
    let single = dec.forward(unit_decoder_input("md_sparse_in", 1), false, false);
    check_in(io, "md_single_masks", single.masks);
    check_in(io, "md_single_iou", single.iou_pred);

    // Batch of two: sample 0 falls back to its best multimask token, sample 1 keeps token 0.
    let dyn_out = dec.forward(unit_decoder_input("dyn_sparse_in", 2), false, false);
    check_in(io, "dyn_all_masks", dyn_out.all.masks.clone());
    check_in(io, "dyn_all_iou", dyn_out.all.iou_pred.clone());
    check_in(io, "dyn_obj_score_logits", dyn_out.object_score_logits.clone());
    check_in(io, "dyn_masks", dyn_out.masks);
    check_in(io, "dyn_iou", dyn_out.iou_pred);
    let stability = dec.stability_scores(dyn_out.all.masks.clone().narrow(1, 0, 1));
    check_in(io, "dyn_stability_token0", stability.clone());
    check_in(io, "dyn_is_stable", stability.greater_equal_elem(0.98).float());
    let best = dyn_out.all.iou_pred.clone().narrow(1, 1, 3).argmax(1).reshape([2]) + 1;
    check_in(io, "dyn_best_multimask_index", best.float());
    // Training selects token 0 for both.
    let train = dec.forward(unit_decoder_input("dyn_sparse_in", 2), false, true);
    let token0 = dyn_out.all.masks.narrow(1, 0, 1);
    assert!(train.masks.sub(token0).abs().max().into_scalar() == 0.0);

    // `repeat_image`: one image, two prompt sets.
    let mut input = unit_decoder_input("dyn_sparse_in", 2);
    input.image_embeddings = unit_tensor("image_embed");
    input.repeat_image = true;
    check_in(io, "dyn_all_masks", dec.predict_masks(input).masks);
}

#[test]
fn unit_tiny_sam_pt_equals_hf_layout() {
    // Meta's `.pt` (torch zip, `{"model": state_dict}` with the video modules) and the HF
    // safetensors hold the same weights: both tables must give identical parameters.
    let pt = unit_model("sam2_tiny/sam2_tiny.pt");
    let hf = unit_model("sam2_tiny/sam2_tiny_hf.safetensors");
    let (a, b) = (rsrefseg::checkpoint::module_tensors(&pt), rsrefseg::checkpoint::module_tensors(&hf));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "{k}");
    }
    let f = pt.encode_image(unit_tensor("pixel_values"));
    check_in(unit_io(), "image_embed", f.image_embed);
}
