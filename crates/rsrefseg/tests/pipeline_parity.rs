//! Pre- and post-processing against the reference pipeline (mmcv Resize + SegDataPreProcessor +
//! RSRefSeg 2's postprocess) on the non-square fixture image.

mod common;

use common::*;
use rsrefseg::host::HostTensor;
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::pre::{clip_pixels, resize_linear_u8, sam_pixels, to_x01, RgbImage};

fn fixture_image() -> RgbImage {
    let io = read_reference("full_io.safetensors");
    let t = &io["image_rgb_u8"];
    RgbImage::new(t.shape[0], t.shape[1], t.data.iter().map(|&v| v as u8).collect()).unwrap()
}

#[test]
fn opencv_linear_resize_is_bit_exact() {
    let io = read_reference("full_io.safetensors");
    let img = fixture_image();
    let expected = &io["resized_rgb_u8"];
    let out = resize_linear_u8(&img, expected.shape[0], expected.shape[1]);
    let diff = out.data.iter().zip(&expected.data).filter(|(a, b)| **a as f32 != **b).count();
    assert_eq!(diff, 0, "{diff} of {} values differ from cv2.resize", out.data.len());
}

#[test]
fn branch_inputs_match_reference() {
    let io = read_reference("full_io.safetensors");
    let (x01, g) = to_x01::<B>(&fixture_image(), 128, &dev());
    assert_eq!(g.resized, (128, 107));
    assert_close("input_x01", x01.clone(), &io["input_x01"], 1e-6);
    assert_close("sam_pixel_values", sam_pixels(x01.clone()), &io["sam_pixel_values"], 1e-5);
    assert_close("clip_pixel_values", clip_pixels(x01, 64), &io["clip_pixel_values"], 1e-5);
}

#[test]
fn mask_postprocessing_matches_reference() {
    let io = read_reference("full_io.safetensors");
    let (_, g) = to_x01::<B>(&fixture_image(), 128, &dev());
    let logits = logits_at_original_size(tensor::<4>(&io["dec_selected_mask"]), g);
    assert_close("final_logits", logits.clone(), &io["final_logits"], 1e-4);
    let mask = binary_mask(logits.clone()).float();
    let expected = &io["final_mask"];
    let logits = HostTensor::from_tensor(logits);
    let mask = HostTensor::from_tensor(mask);
    let mut compared = 0;
    for ((m, e), l) in mask.data.iter().zip(&expected.data).zip(&logits.data) {
        // Pixels within rounding of the threshold may flip; the reference README says so.
        if l.abs() > 1e-3 {
            assert_eq!(m, e);
            compared += 1;
        }
    }
    assert!(compared > 96 * 80 - 5);
}
