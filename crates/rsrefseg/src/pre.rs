//! Image pre-processing, as the reference pipeline does it (reference §1, §7.1).
//!
//! RGB u8 `H0×W0` → keep-ratio resize so the long side is `S` (OpenCV `INTER_LINEAR` on u8,
//! reproduced bit-exactly: 11-bit fixed-point weights) → `/255` → zero-pad bottom/right to `S×S` =
//! `x01`. Then per branch: SAM gets ImageNet normalisation at `S×S`; SigLIP gets `(x−0.5)/0.5`
//! bilinearly downscaled (no antialias) to its native size.

use crate::nn::interpolate::bilinear;
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// ImageNet statistics (SAM branch).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// An RGB image in memory, row-major `H×W×3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot decode the image: {0} (supported: PNG, JPEG, TIFF, BMP, WebP)")]
    Decode(String),
    #[error("the image is empty ({width}×{height})")]
    Empty { width: usize, height: usize },
    #[error("the image is {width}×{height}; the longest accepted side is {max} pixels")]
    TooLarge { width: usize, height: usize, max: usize },
    #[error("the image is {width}×{height}; at most 8192×8192 pixels (67 megapixels) are accepted")]
    TooManyPixels { width: usize, height: usize },
}

/// Longest accepted image side: far beyond any aerial tile (the largest sample images are
/// 4592×3072) but small enough that a forged header cannot make us allocate gigabytes.
pub const MAX_IMAGE_SIDE: usize = 16384;
/// Largest accepted image area (8192², 67 megapixels): the decoded RGB image is at most 192 MiB
/// and the decoder's own buffer at most [`MAX_DECODE_BYTES`], on the CLI and in the page's wasm
/// memory alike. Checked from the file's header, before anything is decoded.
pub const MAX_IMAGE_PIXELS: usize = 8192 * 8192;
/// The decoder's allocation limit: 8 bytes per pixel at the largest area (16-bit RGBA); a file
/// whose samples need more (32-bit float) is refused by the decoder with a clear message.
pub const MAX_DECODE_BYTES: u64 = 8 * MAX_IMAGE_PIXELS as u64;

impl RgbImage {
    pub fn new(height: usize, width: usize, data: Vec<u8>) -> Result<Self, ImageError> {
        if height == 0 || width == 0 {
            return Err(ImageError::Empty { width, height });
        }
        if height.max(width) > MAX_IMAGE_SIDE {
            return Err(ImageError::TooLarge { width, height, max: MAX_IMAGE_SIDE });
        }
        if height * width > MAX_IMAGE_PIXELS {
            return Err(ImageError::TooManyPixels { width, height });
        }
        assert_eq!(data.len(), height * width * 3, "RgbImage: data does not match {height}×{width}×3");
        Ok(Self { height, width, data })
    }

    /// Decode PNG/JPEG/TIFF/BMP/WebP bytes. Grayscale is replicated to RGB, alpha is dropped,
    /// 16-bit and float samples are scaled to 8 bits.
    pub fn decode(bytes: &[u8]) -> Result<Self, ImageError> {
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Decode(e.to_string()))?;
        if reader.format().is_none() {
            return Err(ImageError::Decode("unrecognised file format".into()));
        }
        let (w, h) = reader.into_dimensions().map_err(|e| ImageError::Decode(e.to_string()))?;
        let (wu, hu) = (w as usize, h as usize);
        if wu > MAX_IMAGE_SIDE || hu > MAX_IMAGE_SIDE || w == 0 || h == 0 || wu * hu > MAX_IMAGE_PIXELS {
            return Self::new(hu, wu, Vec::new()).map(|_| unreachable!());
        }
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Decode(e.to_string()))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE as u32);
        limits.max_image_height = Some(MAX_IMAGE_SIDE as u32);
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| ImageError::Decode(e.to_string()))?;
        // `into_rgb8` keeps an RGB8 buffer as it is (a whole scene is never held twice).
        let rgb = img.into_rgb8();
        Self::new(rgb.height() as usize, rgb.width() as usize, rgb.into_raw())
    }
}

/// Size after the keep-ratio resize (mmcv `rescale_size`: `int(x·s + 0.5)`, s = S / long side).
pub fn keep_ratio_size(height: usize, width: usize, target: usize) -> (usize, usize) {
    let s = target as f64 / height.max(width) as f64;
    let r = |x: usize| ((x as f64 * s + 0.5) as usize).clamp(1, target);
    (r(height), r(width))
}

/// Per-axis source indices and 11-bit weights of OpenCV's `INTER_LINEAR` (`resize.cpp`).
/// Horizontally OpenCV clamps the fraction at the borders; vertically it keeps the fraction and
/// clamps only the row indices (which changes the fixed-point rounding of the edge rows).
fn linear_taps(src: usize, dst: usize, clamp_fraction: bool) -> Vec<(usize, usize, i32, i32)> {
    const ONE: f32 = 2048.0; // INTER_RESIZE_COEF_SCALE
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as isize;
            f -= s as f32;
            let last = src as isize - 1;
            if clamp_fraction {
                if s < 0 {
                    f = 0.0;
                    s = 0;
                }
                if s >= last {
                    f = 0.0;
                    s = last;
                }
            }
            let a0 = ((1.0 - f) * ONE).round() as i32;
            let a1 = (f * ONE).round() as i32;
            (s.clamp(0, last) as usize, (s + 1).clamp(0, last) as usize, a0, a1)
        })
        .collect()
}

/// `cv2.resize(img, (w1, h1), interpolation=cv2.INTER_LINEAR)` on u8 RGB, bit-exact with
/// OpenCV's fixed-point path (horizontal pass in `int`, vertical pass with the rounding shifts
/// of `VResizeLinear<uchar>`).
pub fn resize_linear_u8(img: &RgbImage, h1: usize, w1: usize) -> RgbImage {
    let (h0, w0) = (img.height, img.width);
    let tx = linear_taps(w0, w1, true);
    let ty = linear_taps(h0, h1, false);
    // Horizontal pass for every source row (values scaled by 2048).
    let mut rows = vec![0i32; h0 * w1 * 3];
    for y in 0..h0 {
        let src = &img.data[y * w0 * 3..(y + 1) * w0 * 3];
        let dst = &mut rows[y * w1 * 3..(y + 1) * w1 * 3];
        for (x, &(s0, s1, a0, a1)) in tx.iter().enumerate() {
            for c in 0..3 {
                dst[x * 3 + c] = src[s0 * 3 + c] as i32 * a0 + src[s1 * 3 + c] as i32 * a1;
            }
        }
    }
    let mut out = vec![0u8; h1 * w1 * 3];
    for (y, &(s0, s1, b0, b1)) in ty.iter().enumerate() {
        let r0 = &rows[s0 * w1 * 3..(s0 + 1) * w1 * 3];
        let r1 = &rows[s1 * w1 * 3..(s1 + 1) * w1 * 3];
        let dst = &mut out[y * w1 * 3..(y + 1) * w1 * 3];
        for i in 0..w1 * 3 {
            let v = (((b0 * (r0[i] >> 4)) >> 16) + ((b1 * (r1[i] >> 4)) >> 16) + 2) >> 2;
            dst[i] = v.clamp(0, 255) as u8;
        }
    }
    RgbImage { height: h1, width: w1, data: out }
}

/// Geometry of one pre-processed image (needed to undo it on the mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Original `(H0, W0)`.
    pub original: (usize, usize),
    /// After the keep-ratio resize `(h1, w1)`; the rest of the `S×S` square is padding.
    pub resized: (usize, usize),
    /// Model input side `S` (1024 for SAM 2.1).
    pub padded: usize,
}

/// `x01` `[1, 3, S, S]`: resized, scaled to [0, 1], zero-padded bottom/right.
pub fn to_x01<B: Backend>(img: &RgbImage, size: usize, device: &B::Device) -> (Tensor<B, 4>, Geometry) {
    let (h1, w1) = keep_ratio_size(img.height, img.width, size);
    let resized = if (h1, w1) == (img.height, img.width) { img.clone() } else { resize_linear_u8(img, h1, w1) };
    let mut chw = vec![0f32; 3 * size * size];
    for y in 0..h1 {
        for x in 0..w1 {
            for c in 0..3 {
                chw[c * size * size + y * size + x] = resized.data[(y * w1 + x) * 3 + c] as f32 / 255.0;
            }
        }
    }
    let t = Tensor::from_data(TensorData::new(chw, [1, 3, size, size]), device);
    (t, Geometry { original: (img.height, img.width), resized: (h1, w1), padded: size })
}

fn normalise<B: Backend>(x: Tensor<B, 4>, mean: [f32; 3], std: [f32; 3]) -> Tensor<B, 4> {
    let device = x.device();
    let m = Tensor::<B, 1>::from_floats(mean, &device).reshape([1, 3, 1, 1]);
    let s = Tensor::<B, 1>::from_floats(std, &device).reshape([1, 3, 1, 1]);
    (x - m) / s
}

/// SAM branch: ImageNet normalisation at `S×S`.
pub fn sam_pixels<B: Backend>(x01: Tensor<B, 4>) -> Tensor<B, 4> {
    normalise(x01, IMAGENET_MEAN, IMAGENET_STD)
}

/// SigLIP branch: `(x − 0.5) / 0.5`, then bilinear (`align_corners=False`, no antialias) to
/// `clip_size²` (normalise-then-resize, as the reference; both are linear).
pub fn clip_pixels<B: Backend>(x01: Tensor<B, 4>, clip_size: usize) -> Tensor<B, 4> {
    bilinear((x01 - 0.5) / 0.5, [clip_size, clip_size], false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_ratio_sizes() {
        assert_eq!(keep_ratio_size(96, 80, 128), (128, 107));
        assert_eq!(keep_ratio_size(3072, 4592, 1024), (685, 1024));
        assert_eq!(keep_ratio_size(800, 800, 1024), (1024, 1024));
        assert_eq!(keep_ratio_size(1, 5000, 1024), (1, 1024));
    }

    #[test]
    fn rejects_garbage_and_empty() {
        assert!(matches!(RgbImage::decode(b"not an image"), Err(ImageError::Decode(_))));
        assert!(matches!(RgbImage::new(0, 4, vec![]), Err(ImageError::Empty { .. })));
        let mut png = Vec::new();
        image::RgbaImage::from_pixel(3, 2, image::Rgba([10, 20, 30, 0]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let img = RgbImage::decode(&png).unwrap();
        assert_eq!((img.height, img.width), (2, 3));
        assert_eq!(&img.data[..3], &[10, 20, 30]);
        // Truncated file: a decode error, not a panic.
        assert!(RgbImage::decode(&png[..png.len() / 2]).is_err());
    }

    /// A small PNG whose header claims `w × h` (IHDR patched, CRC recomputed): what a forged or
    /// huge file looks like to the size checks, which must answer before anything is decoded.
    fn png_claiming(w: u32, h: u32, color: image::ExtendedColorType) -> Vec<u8> {
        use image::ImageEncoder;
        let mut png = Vec::new();
        let bytes = if color == image::ExtendedColorType::L8 { 1 } else { 3 };
        image::codecs::png::PngEncoder::new(&mut png).write_image(&[0u8; 3][..bytes], 1, 1, color).unwrap();
        // Signature (8) + length (4) + "IHDR" (4), then width, height.
        png[16..20].copy_from_slice(&w.to_be_bytes());
        png[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    /// 16000² grayscale once passed the side check and took 5 GB; 13400² RGB failed with the
    /// decoder's "Memory limit exceeded" although the side is accepted. Both are now refused
    /// from the header, naming the area limit.
    #[test]
    fn areas_beyond_the_limit_are_refused_from_the_header() {
        use image::ExtendedColorType::{Rgb8, L8};
        for (w, h, color) in [(16000, 16000, L8), (13400, 13400, Rgb8), (8193, 8192, Rgb8)] {
            let t = std::time::Instant::now();
            let err = RgbImage::decode(&png_claiming(w, h, color)).unwrap_err();
            assert!(matches!(err, ImageError::TooManyPixels { .. }), "{w}×{h}: {err}");
            assert!(err.to_string().contains("67 megapixels"), "{err}");
            assert!(t.elapsed().as_secs_f64() < 1.0);
        }
        assert!(matches!(RgbImage::decode(&png_claiming(20000, 10, L8)), Err(ImageError::TooLarge { .. })));
        // Within the limits, a header that lies about the data is a decode error, not a panic.
        assert!(matches!(RgbImage::decode(&png_claiming(4000, 4000, L8)), Err(ImageError::Decode(_))));
        assert!(matches!(RgbImage::new(8193, 8192, vec![]), Err(ImageError::TooManyPixels { .. })));
    }
}
