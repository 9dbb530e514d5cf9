//! Real aerial photographs (`shared/data/aerial/`: PNG and JPEG, square and not, up to
//! 4592×3072) through the whole pipeline — decode, keep-ratio resize, pad, both encoder branches,
//! prompter, SAM, crop back, resize to the original size — on the tiny reference model. The
//! weights are random-ish, so only geometry and sanity are asserted, plus one encode answering
//! several sentences and odd image kinds (grayscale, RGBA, 16-bit).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rsrefseg::checkpoint::{HostTensor, LoadOptions};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::model::load_rsrefseg_tensors;
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::pre::{keep_ratio_size, to_x01, RgbImage};
use std::path::PathBuf;

fn aerial_dir() -> PathBuf {
    reference_dir().join("../../data/aerial")
}

#[test]
fn every_aerial_photo_goes_through_end_to_end() {
    let config = RsRefSegConfig::reference_dev();
    let (model, _) =
        load_rsrefseg_tensors::<B>(read_reference("full_model.safetensors"), &config, &dev(), LoadOptions::default()).unwrap();
    let io = read_reference("full_io.safetensors");
    let ids: Vec<i64> = io["input_ids"].data.iter().map(|&v| v as i64).collect();
    let l = ids.len();
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(aerial_dir()).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_lowercase();
        if !["png", "jpg", "jpeg"].contains(&ext.as_str()) {
            continue;
        }
        let img = RgbImage::decode(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (x01, g) = to_x01::<B>(&img, config.image_size(), &dev());
        assert_eq!(g.resized, keep_ratio_size(img.height, img.width, config.image_size()));
        let image = model.encode_image(x01);
        // Two sentences against one encoded image.
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new([ids.clone(), ids.clone()].concat(), [2, l]), &dev());
        let out = model.query(&image, input, None, false);
        let logits = logits_at_original_size(out.mask_logits.slice([0..1]), g);
        assert_eq!(logits.dims(), [1, 1, img.height, img.width], "{}", path.display());
        let host = HostTensor::from_tensor(logits.clone());
        assert!(host.data.iter().all(|v| v.is_finite()), "{}: non-finite logits", path.display());
        let mask = HostTensor::from_tensor(binary_mask(logits).float());
        assert_eq!(mask.numel(), img.height * img.width);
        seen += 1;
    }
    assert!(seen >= 9, "only {seen} photos found in {}", aerial_dir().display());
}

#[test]
fn odd_image_kinds_are_accepted() {
    let encode = |img: image::DynamicImage| {
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        RgbImage::decode(&bytes).unwrap()
    };
    let gray = encode(image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(5, 3, image::Luma([77]))));
    assert_eq!(&gray.data[..3], &[77, 77, 77]);
    let rgba = encode(image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(2, 2, image::Rgba([1, 2, 3, 4]))));
    assert_eq!(&rgba.data[..3], &[1, 2, 3]);
    let deep = encode(image::DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(2, 2, image::Rgb([65535u16, 0, 32896]))));
    assert_eq!(&deep.data[..3], &[255, 0, 128]);
}
