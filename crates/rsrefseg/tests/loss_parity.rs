//! Loss head parity against `loss_io.safetensors` (reference `PseudoSegHead.loss_by_feat`, train
//! mode, B = 3, sample 1 with an empty GT): every weighted term, the total, the intermediates,
//! the padding-label variant, and the gradients of the total on `Autodiff<NdArray>`.

mod common;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use common::*;
use rsrefseg::checkpoint::keys::{section, KeyTable, Transform};
use rsrefseg::checkpoint::{load_module, HostTensor, LoadOptions, TensorMap};
use rsrefseg::loss::{
    bce_dice, contrastive, DecodeHead, DecodeHeadConfig, LossInputs, LossTerms, LossWeights, RefSegLoss,
};

type AD = Autodiff<B>;

/// The decode head's scalars as the full state dict stores them (0-d tensors).
const DECODE_HEAD: KeyTable = KeyTable {
    format: "decode_head of the RSRefSeg 2 state dict",
    transforms: &[Transform::ScalarToVector(r".*")],
    renames: &[],
    ignored: &[],
};

fn loss_io() -> TensorMap {
    read_reference("loss_io.safetensors")
}

fn host<Bk: Backend, const D: usize>(t: &HostTensor, device: &Bk::Device) -> Tensor<Bk, D> {
    t.to_tensor(device)
}

/// τ, β (and the unused `*1` pair) from `full_model.safetensors`, through the key table.
fn decode_head<Bk: Backend>(device: &Bk::Device) -> DecodeHead<Bk> {
    let full = read_reference("full_model.safetensors");
    let (tensors, dropped) = DECODE_HEAD.apply(section(&full, "decode_head.")).unwrap();
    assert!(dropped.is_empty());
    let head = DecodeHeadConfig::new().init::<Bk>(device);
    let (head, report) = load_module(head, &tensors, device, LoadOptions::default(), "decode_head").unwrap();
    assert_eq!(report.loaded, 4);
    head
}

fn inputs<Bk: Backend>(io: &TensorMap, gt_key: &str, device: &Bk::Device) -> LossInputs<Bk> {
    LossInputs {
        mask_logits: host(&io["head_in_seg_logits_lowres"], device),
        gt: host(&io[gt_key], device),
        t1: host(&io["head_in_t1"], device),
        t2: host(&io["head_in_t2"], device),
        v: host(&io["head_in_clip_visual_feat_map"], device),
    }
}

fn scalar<Bk: Backend>(t: Tensor<Bk, 1>) -> f32 {
    HostTensor::from_tensor(t).data[0]
}

/// |a − b| ≤ rtol·|b| for a loss value; returns the relative difference.
fn assert_rel(what: &str, actual: f32, expected: &HostTensor, rtol: f32) -> f32 {
    let e = expected.data[0];
    let rel = (actual - e).abs() / e.abs().max(f32::MIN_POSITIVE);
    assert!(actual.is_finite() && rel <= rtol, "{what}: {actual} vs expected {e} (relative diff {rel:e})");
    eprintln!("{what}: {actual} vs {e}, relative diff {rel:e}");
    rel
}

/// max|a − b| ≤ rtol·max|b| over the whole tensor (gradients: the scale is the tensor's, not
/// each element's, since many entries are ~0).
fn assert_close_to_max(what: &str, actual: HostTensor, expected: &HostTensor, rtol: f32) {
    assert_eq!(actual.shape, expected.shape, "{what}: shape");
    assert!(actual.data.iter().all(|v| v.is_finite()), "{what}: non-finite values");
    let scale = expected.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = actual.data.iter().zip(&expected.data).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= rtol * scale, "{what}: max abs diff {diff:e} > {rtol:e} · max|expected| {scale:e}");
    eprintln!("{what}: max abs diff {diff:e} (max|expected| {scale:e}, ratio {:e})", diff / scale);
}

fn check_terms<Bk: Backend>(io: &TensorMap, prefix: &str, terms: &LossTerms<Bk>) {
    let rtol = 1e-5;
    assert_rel("bce", scalar(terms.bce.clone()), &io[&format!("{prefix}weighted_loss_ce")], rtol);
    assert_rel("dice", scalar(terms.dice.clone()), &io[&format!("{prefix}weighted_loss_dice")], rtol);
    assert_rel("ortho", scalar(terms.ortho.clone()), &io[&format!("{prefix}weighted_loss_text_queries1_queries2")], rtol);
    assert_rel(
        "contrastive",
        scalar(terms.contrastive.clone()),
        &io[&format!("{prefix}weighted_loss_perbatch_refined_img_feat_map_perbatch")],
        rtol,
    );
    assert_rel("total", scalar(terms.total.clone()), &io[&format!("{prefix}total")], rtol);
}

#[test]
fn decode_head_scalars_load_from_the_state_dict() {
    let io = loss_io();
    let head = decode_head::<B>(&dev());
    assert_eq!(head.logit_scale2.val().dims(), [1]);
    assert_close("logit_scale2", head.logit_scale2.val(), &io["head_in_logit_scale2_tau"], 0.0);
    assert_close("logit_bias2", head.logit_bias2.val(), &io["head_in_logit_bias2"], 0.0);
}

#[test]
fn losses_match_reference() {
    let io = loss_io();
    let head = decode_head::<B>(&dev());
    let terms = RefSegLoss::new(LossWeights::code()).forward(inputs::<B>(&io, "in_gt", &dev()), &head);
    check_terms(&io, "", &terms);
}

#[test]
fn pad255_variant_matches_reference() {
    let io = loss_io();
    assert!(io["pad255_in_gt"].data.contains(&255.0));
    let head = decode_head::<B>(&dev());
    let terms = RefSegLoss::new(LossWeights::code()).forward(inputs::<B>(&io, "pad255_in_gt", &dev()), &head);
    check_terms(&io, "pad255_", &terms);
}

#[test]
fn intermediates_match_reference() {
    let io = loss_io();
    let head = decode_head::<B>(&dev());
    let x = inputs::<B>(&io, "in_gt", &dev());
    let [_, _, s, _] = x.gt.dims();
    let [_, _, g, _] = x.v.dims();

    let up = bce_dice::upsample_logits(x.mask_logits.clone(), [s, s]);
    assert_close("mid_seg_logits_up", up, &io["mid_seg_logits_up"], 1e-4);
    let down = contrastive::downsample_gt(x.gt.clone(), g);
    assert_close("mid_gt_downsampled_interp", down, &io["mid_gt_downsampled_interp"], 1e-4);
    let logits = contrastive::logits(x.v, x.gt, x.t2, head.logit_scale2.val(), head.logit_bias2.val());
    assert_close("mid_contrastive_logits_per_image", logits.clone(), &io["mid_contrastive_logits_per_image"], 1e-4);
    assert_close("mid_contrastive_logits_per_text", logits.transpose(), &io["mid_contrastive_logits_per_text"], 1e-4);
}

#[test]
fn gradients_match_reference() {
    let io = loss_io();
    let device = dev();
    let head = decode_head::<AD>(&device);
    let x = inputs::<AD>(&io, "in_gt", &device);
    let x = LossInputs {
        mask_logits: x.mask_logits.require_grad(),
        gt: x.gt,
        t1: x.t1.require_grad(),
        t2: x.t2.require_grad(),
        v: x.v.require_grad(),
    };
    let terms = RefSegLoss::new(LossWeights::code()).forward(x.clone(), &head);
    check_terms(&io, "", &terms);
    let grads = terms.total.backward();

    let rtol = 1e-4;
    let grad = |what: &str, g: Option<HostTensor>, key: &str| {
        assert_close_to_max(what, g.unwrap_or_else(|| panic!("{what}: no gradient")), &io[key], rtol)
    };
    grad("d/d mask_logits", x.mask_logits.grad(&grads).map(HostTensor::from_tensor), "head_grad_seg_logits_lowres");
    grad("d/d t1", x.t1.grad(&grads).map(HostTensor::from_tensor), "head_grad_t1");
    grad("d/d t2", x.t2.grad(&grads).map(HostTensor::from_tensor), "head_grad_t2");
    grad("d/d v", x.v.grad(&grads).map(HostTensor::from_tensor), "head_grad_clip_visual_feat_map");

    // The state dict stores these as 0-d; compare values.
    let tau = HostTensor::from_tensor(head.logit_scale2.val().grad(&grads).expect("d/d tau"));
    let expected_tau = &io["grad.decode_head.logit_scale2"];
    let diff = (tau.data[0] - expected_tau.data[0]).abs();
    assert!(diff <= rtol * expected_tau.data[0].abs(), "d/d tau: {} vs {}", tau.data[0], expected_tau.data[0]);
    eprintln!("d/d tau: {} vs {} (abs diff {diff:e})", tau.data[0], expected_tau.data[0]);
    // β shifts every logit equally and cancels in the softmax: analytically 0.
    let beta = HostTensor::from_tensor(head.logit_bias2.val().grad(&grads).expect("d/d beta")).data[0];
    let expected_beta = io["grad.decode_head.logit_bias2"].data[0];
    assert!(beta.abs() < 1e-6 && expected_beta.abs() < 1e-6, "d/d beta: {beta} vs {expected_beta}");
    eprintln!("d/d beta: {beta:e} vs {expected_beta:e}");
    // The `*1` scalars take no part in the configured terms.
    assert!(head.logit_scale1.val().grad(&grads).is_none());
}

/// Sample 1 of the fixture has an empty GT; a batch where *every* region is empty is the extreme
/// case: all contrastive logits equal β, the loss is ln b, and no gradient may be NaN.
#[test]
fn empty_gt_gives_finite_loss_and_gradients() {
    let io = loss_io();
    let device = dev();
    let gt = &io["in_gt"];
    let per_sample = gt.numel() / gt.shape[0];
    assert!(gt.data[per_sample..2 * per_sample].iter().all(|&v| v == 0.0), "fixture sample 1 should be empty");

    let head = decode_head::<AD>(&device);
    let x = inputs::<AD>(&io, "in_gt", &device);
    let x = LossInputs { gt: x.gt.zeros_like(), v: x.v.require_grad(), t2: x.t2.require_grad(), ..x };
    let terms = RefSegLoss::new(LossWeights::code()).forward(x.clone(), &head);
    let contrastive = scalar(terms.contrastive.clone()) / 0.5;
    assert!((contrastive - 3f32.ln()).abs() < 1e-6, "all-empty contrastive loss {contrastive} ≠ ln 3");
    let grads = terms.total.backward();
    let v = x.v.grad(&grads).map(HostTensor::from_tensor);
    let t2 = x.t2.grad(&grads).map(HostTensor::from_tensor);
    for (what, g) in [("v", v), ("t2", t2)] {
        let g = g.expect("gradient");
        assert!(g.data.iter().all(|v| v.is_finite()), "d/d {what} has non-finite values");
    }
}
