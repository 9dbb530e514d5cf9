//! The whole model against the authors' code: the non-square fixture image and one sentence,
//! from the released-checkpoint layout (PEFT keys, LoRA merged on load), in eval mode with SAM's
//! stability fallback (token 0 is unstable in this set, so the selected mask is a multimask one).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rsrefseg::checkpoint::{HostTensor, LoadOptions};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::model::{load_rsrefseg_tensors, RsRefSeg};
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::pre::{to_x01, RgbImage};

fn model() -> RsRefSeg<B> {
    let file = read_reference("full_model.safetensors");
    let (model, report) =
        load_rsrefseg_tensors::<B>(file, &RsRefSegConfig::reference_dev(), &dev(), LoadOptions::default()).unwrap();
    assert!(report.is_clean(), "{report}");
    model
}

fn ids(t: &HostTensor) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(t.data.iter().map(|&v| v as i64).collect::<Vec<_>>(), t.shape.clone()), &dev())
}

#[test]
fn image_and_sentence_to_mask_match_reference() {
    let io = read_reference("full_io.safetensors");
    let model = model();
    let img = &io["image_rgb_u8"];
    let img = RgbImage::new(img.shape[0], img.shape[1], img.data.iter().map(|&v| v as u8).collect()).unwrap();
    let (x01, geometry) = to_x01::<B>(&img, 128, &dev());
    let image = model.encode_image(x01);
    assert_close("v", image.v.clone(), &io["v"], 1e-4);
    assert_close("sam_image_embed", image.sam.image_embed.clone(), &io["sam_image_embed"], 1e-4);

    let out = model.query(&image, ids(&io["input_ids"]), Some(ids(&io["attention_mask"])), false);
    assert_close("t_word", out.text.t_word.clone(), &io["t_word"], 1e-4);
    assert_close("t_sent", out.text.t_sent.clone(), &io["t_sent"], 1e-4);
    assert_close("prompter_t1", out.prompter.t1.clone(), &io["prompter_t1"], 1e-4);
    assert_close("prompter_t2", out.prompter.t2.clone(), &io["prompter_t2"], 1e-4);
    assert_close("prompter_sparse_prompts", out.prompter.sparse.clone(), &io["prompter_sparse_prompts"], 1e-4);
    assert_close("prompter_refined_img_feat_map", out.prompter.refined.clone(), &io["prompter_refined_img_feat_map"], 1e-4);
    assert_close("prompter_dense_prompts", out.localization().unwrap(), &io["prompter_dense_prompts"], 1e-4);
    assert_close("sam_dense_embed", out.dense_embedding.clone(), &io["sam_dense_embed"], 1e-4);
    assert_close("dec_all_masks", out.decoder.all.masks.clone(), &io["dec_all_masks"], 1e-4);
    assert_close("dec_all_iou", out.decoder.all.iou_pred.clone(), &io["dec_all_iou"], 1e-4);
    assert_close("dec_mask_token0", out.decoder.all.masks.clone().slice([0..1, 0..1]), &io["dec_mask_token0"], 1e-4);
    // Stability fallback: token 0 is unstable here, the best multimask token is selected.
    assert_eq!(io["dec_is_stable"].data, vec![0.0]);
    assert_close("dec_selected_mask", out.mask_logits.clone(), &io["dec_selected_mask"], 1e-4);
    assert_close("dec_selected_iou", out.iou.clone(), &io["dec_selected_iou"], 1e-4);

    let logits = logits_at_original_size(out.mask_logits, geometry);
    assert_close("final_logits", logits.clone(), &io["final_logits"], 1e-4);
    let mask = HostTensor::from_tensor(binary_mask(logits.clone()).float());
    let logits = HostTensor::from_tensor(logits);
    let expected = &io["final_mask"];
    let mut differing = 0;
    for ((m, e), l) in mask.data.iter().zip(&expected.data).zip(&logits.data) {
        if l.abs() > 1e-3 && m != e {
            differing += 1;
        }
    }
    assert_eq!(differing, 0, "mask pixels away from the threshold differ");
    assert!(mask.data.iter().any(|&v| v > 0.0) && mask.data.iter().any(|&v| v == 0.0), "degenerate mask");
}

#[test]
fn training_mode_selects_token_zero() {
    let io = read_reference("full_io.safetensors");
    let model = model();
    let x01 = tensor::<4>(&io["input_x01"]);
    let out = model.forward(x01, ids(&io["input_ids"]), Some(ids(&io["attention_mask"])), true);
    assert_close("dec_mask_token0", out.mask_logits, &io["dec_mask_token0"], 1e-4);
}

#[test]
fn one_image_answers_several_sentences() {
    let io = read_reference("full_io.safetensors");
    let model = model();
    let image = model.encode_image(tensor::<4>(&io["input_x01"]));
    // Two copies of the fixture sentence in one batch: both must equal the single answer.
    let single = ids(&io["input_ids"]);
    let pair = Tensor::cat(vec![single.clone(), single], 0);
    let out = model.query(&image, pair, None, false);
    let masks = out.mask_logits;
    assert_close("sentence 0", masks.clone().slice([0..1]), &io["dec_selected_mask"], 1e-4);
    assert_close("sentence 1", masks.slice([1..2]), &io["dec_selected_mask"], 1e-4);
}

#[test]
fn release_file_with_a_missing_tensor_is_rejected_by_name() {
    let mut file = read_reference("full_model.safetensors");
    file.remove("prompter.img_pe");
    file.get_mut("backbone.model.no_mem_embed").unwrap().shape = vec![1, 32, 1];
    let err = load_rsrefseg_tensors::<B>(file, &RsRefSegConfig::reference_dev(), &dev(), LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("prompter.img_pe: expected shape [1, 64, 8, 8]"), "{err}");
    assert!(err.contains("sam.no_mem_embed: expected shape [1, 1, 32], found [1, 32, 1]"), "{err}");
}
