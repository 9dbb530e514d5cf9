//! One training-mode forward and backward of the whole model against the authors' code
//! (`loss_io.safetensors`): every loss term, the weighted total, and the gradients of the listed
//! trainable parameters (LoRA adapters kept unmerged, as during fine-tuning).

mod common;

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rsrefseg::checkpoint::keys::rsrefseg_release::DECODE_HEAD;
use rsrefseg::checkpoint::keys::{section, LoraHandling};
use rsrefseg::checkpoint::{load_module, param_ids, HostTensor, LoadOptions, TensorMap};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::loss::{LossWeights, RefSegLoss};
use rsrefseg::model::release_tensors;
use rsrefseg::nn::LoraConfig;
use rsrefseg::train::{Batch, TrainModel};

type AB = Autodiff<B>;

/// Release-layout tensors → canonical names of [`TrainModel`] (adapters kept).
fn train_tensors(file: &TensorMap) -> TensorMap {
    let mut out: TensorMap =
        release_tensors(file.clone(), LoraHandling::Keep).unwrap().into_iter().map(|(k, v)| (format!("model.{k}"), v)).collect();
    let (head, _) = DECODE_HEAD.apply(section(file, "decode_head.")).unwrap();
    out.extend(head.into_iter().map(|(k, v)| (format!("decode_head.{k}"), v)));
    out
}

/// Max |a − b| relative to max |b| (the measure used for gradients); returns whether it is
/// within `rtol`, printing the value either way.
fn relative_ok(what: &str, actual: &HostTensor, expected: &HostTensor, rtol: f32) -> bool {
    assert_eq!(actual.shape, expected.shape, "{what}: shape");
    let scale = expected.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = actual.data.iter().zip(&expected.data).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("{what}: max |diff| / max |expected| = {:e}", diff / scale);
    diff <= rtol * scale
}

fn relative_close(what: &str, actual: &HostTensor, expected: &HostTensor, rtol: f32) {
    assert!(relative_ok(what, actual, expected, rtol), "{what}: beyond {rtol:e}");
}

#[test]
fn losses_and_gradients_match_reference() {
    let io = read_reference("loss_io.safetensors");
    let file = read_reference("full_model.safetensors");
    let model = TrainModel::<AB>::new(&RsRefSegConfig::reference_dev(), Some(&LoraConfig::reference()), &dev()).unwrap();
    let (model, report) = load_module(model, &train_tensors(&file), &dev(), LoadOptions::default(), "train model").unwrap();
    assert!(report.is_clean(), "{report}");

    // Inputs: 3 square 128² images (x01 = u8 / 255 exactly), GT, right-padded token ids.
    let img = &io["in_images_rgb_u8"];
    let [b, s] = [img.shape[0], img.shape[1]];
    let mut x = vec![0f32; b * 3 * s * s];
    for n in 0..b {
        for y in 0..s {
            for xx in 0..s {
                for c in 0..3 {
                    x[((n * 3 + c) * s + y) * s + xx] = img.data[((n * s + y) * s + xx) * 3 + c] / 255.0;
                }
            }
        }
    }
    let ids = |t: &HostTensor| -> Tensor<AB, 2, Int> {
        Tensor::from_data(TensorData::new(t.data.iter().map(|&v| v as i64).collect::<Vec<_>>(), t.shape.clone()), &dev())
    };
    let batch = Batch {
        x01: Tensor::from_data(TensorData::new(x, [b, 3, s, s]), &dev()),
        gt: Tensor::from_inner(tensor::<4>(&io["in_gt"])),
        input_ids: ids(&io["in_input_ids"]),
        attention_mask: ids(&io["in_attention_mask"]),
    };

    let terms = model.loss(&batch, &RefSegLoss::new(LossWeights::code()));
    for (name, t) in [
        ("weighted_loss_ce", &terms.bce),
        ("weighted_loss_dice", &terms.dice),
        ("weighted_loss_text_queries1_queries2", &terms.ortho),
        ("weighted_loss_perbatch_refined_img_feat_map_perbatch", &terms.contrastive),
        ("total", &terms.total),
    ] {
        relative_close(name, &HostTensor::from_tensor(t.clone().inner()), &io[name], 1e-4);
    }

    let grads = GradientsParams::from_grads(terms.total.backward(), &model);
    let ids = param_ids(&model);
    // The reference's gradient names, mapped through the same key tables as the weights.
    let listed: TensorMap = io
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("grad.").map(|k| (k.to_string(), v.clone())))
        .collect();
    let canonical = train_tensors(&listed);
    assert_eq!(canonical.len(), listed.len(), "every listed gradient maps to a parameter");
    let mut failed = Vec::new();
    for (name, expected) in &canonical {
        let (id, transposed) = ids.get(name).unwrap_or_else(|| panic!("no parameter {name}"));
        let g = match expected.shape.len() {
            1 => grads.get::<B, 1>(*id).map(HostTensor::from_tensor),
            2 => grads.get::<B, 2>(*id).map(HostTensor::from_tensor),
            3 => grads.get::<B, 3>(*id).map(HostTensor::from_tensor),
            4 => grads.get::<B, 4>(*id).map(HostTensor::from_tensor),
            r => panic!("rank {r}"),
        }
        .unwrap_or_else(|| panic!("{name} has no gradient"));
        let g = if *transposed { g.transpose2() } else { g };
        if name.ends_with("logit_bias2") {
            // Analytically zero (a shift of every logit cancels in the softmax): compare absolutely.
            assert!(g.data[0].abs() < 1e-5 && expected.data[0].abs() < 1e-5, "{name}: {:?}", g.data);
            continue;
        }
        if !relative_ok(name, &g, expected, 1e-4) {
            failed.push(name.clone());
        }
    }
    assert!(failed.is_empty(), "gradients beyond tolerance: {failed:?}");
}
