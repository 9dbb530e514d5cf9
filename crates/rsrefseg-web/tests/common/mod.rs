//! The parity input shared by the host reference (`native_reference.rs`) and the browser tests
//! (`browser_model.rs`): the shipped nano bundle (`models/nano/nano.rsb`, the page's default
//! model), a synthetic sample scene of the page cropped to a non-square size (so that resizing
//! and padding are exercised), and one of its example sentences.

#![allow(dead_code)]

use rsrefseg::pre::RgbImage;

/// The page's default model bundle.
pub const BUNDLE: &[u8] = include_bytes!("../../../../models/nano/nano.rsb");
const SCENE_PNG: &[u8] = include_bytes!("../../../../web/samples/synth-tanks.png");
pub const SENTENCE: &str = "the largest white storage tank";
/// `(height, width)` of the top-left crop of the 256 × 256 scene: up-scaled to 256 on the long
/// side and padded at the bottom by the pre-processing.
pub const IMAGE_HW: (usize, usize) = (176, 232);

pub fn image() -> RgbImage {
    let scene = RgbImage::decode(SCENE_PNG).expect("sample scene");
    let (h, w) = IMAGE_HW;
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        data.extend_from_slice(&scene.data[y * scene.width * 3..(y * scene.width + w) * 3]);
    }
    RgbImage::new(h, w, data).expect("crop")
}
