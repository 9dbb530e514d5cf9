//! GeoTIFF scenes (the `tiff` crate): decoding a scene with its georeferencing, and writing the
//! scene mask as a GeoTIFF with the same georeferencing.
//!
//! The georeferencing is kept as the scene's own GeoTIFF tags (pixel scale, tie points or the
//! transformation matrix, and the GeoKey directory with its double and ASCII parameters), which
//! are written back unchanged on the mask so that any GIS places the mask exactly on the scene,
//! whatever its coordinate system. From the tags an affine pixel → map transform is derived for
//! the mask's polygons ([`super::polygons`]).

use crate::pre::{RgbImage, MAX_DECODE_BYTES, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE};
use serde::Serialize;
use std::io::Cursor;
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::encoder::{colortype, Compression, TiffEncoder};
use tiff::tags::Tag;
use tiff::ColorType;

/// GeoKey ids the transform depends on (GeoTIFF 1.1 §7.5).
const GT_RASTER_TYPE: u16 = 1025;
const PROJECTED_CRS: u16 = 3072;
const GEOGRAPHIC_CRS: u16 = 2048;
/// `GTRasterTypeGeoKey` value of "PixelIsPoint" (raster coordinates name pixel centres).
const RASTER_PIXEL_IS_POINT: u16 = 2;

/// The georeferencing of a scene.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GeoReference {
    /// `ModelPixelScaleTag` (33550): `(sx, sy, sz)`.
    pub pixel_scale: Option<Vec<f64>>,
    /// `ModelTiepointTag` (33922): `(i, j, k, x, y, z)` per tie point.
    pub tiepoints: Option<Vec<f64>>,
    /// `ModelTransformationTag` (34264): a 4 × 4 row-major matrix.
    pub transformation: Option<Vec<f64>>,
    /// `GeoKeyDirectoryTag` (34735), `GeoDoubleParamsTag` (34736), `GeoAsciiParamsTag` (34737).
    pub geo_keys: Option<Vec<u16>>,
    pub geo_doubles: Option<Vec<f64>>,
    pub geo_ascii: Option<String>,
    /// Pixel-corner raster `(col, row)` → map `(x, y)`: `x = a·col + b·row + c`,
    /// `y = d·col + e·row + f`, as `[a, b, c, d, e, f]` (GDAL's geotransform, reordered).
    pub affine: [f64; 6],
    /// The EPSG code of the projected (or else geographic) coordinate system, when the keys name
    /// one (user-defined systems have none).
    pub epsg: Option<u16>,
}

impl GeoReference {
    /// The map coordinates of the raster point `(col, row)` (pixel corners: `(0, 0)` is the
    /// scene's top-left corner).
    pub fn to_map(&self, col: f64, row: f64) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.affine;
        (a * col + b * row + c, d * col + e * row + f)
    }

    /// Derive the transform from the tags; `None` without a usable transform.
    fn from_tags(
        pixel_scale: Option<Vec<f64>>,
        tiepoints: Option<Vec<f64>>,
        transformation: Option<Vec<f64>>,
        geo_keys: Option<Vec<u16>>,
        geo_doubles: Option<Vec<f64>>,
        geo_ascii: Option<String>,
    ) -> Result<Option<Self>, String> {
        let key = |id: u16| -> Option<u16> {
            let k = geo_keys.as_ref()?;
            // Header of 4 shorts, then (id, location, count, value) per key; location 0 = inline.
            k.get(4..)?.chunks_exact(4).find(|e| e[0] == id && e[1] == 0).map(|e| e[3])
        };
        let mut affine = if let Some(m) = &transformation {
            if m.len() != 16 {
                return Err(format!("the GeoTIFF transformation matrix has {} values instead of 16", m.len()));
            }
            [m[0], m[1], m[3], m[4], m[5], m[7]]
        } else if let (Some(s), Some(t)) = (&pixel_scale, &tiepoints) {
            if s.len() < 2 || t.len() < 6 {
                return Err("the GeoTIFF pixel scale or tie point is incomplete".into());
            }
            // Raster (i, j) sits at map (x, y); north-up, rows going south.
            let (i, j, x, y) = (t[0], t[1], t[3], t[4]);
            [s[0], 0.0, x - i * s[0], 0.0, -s[1], y + j * s[1]]
        } else {
            return Ok(None);
        };
        if !affine.iter().all(|v| v.is_finite()) || affine[0] * affine[4] - affine[1] * affine[3] == 0.0 {
            return Err("the GeoTIFF transform is degenerate (zero or non-finite scale)".into());
        }
        if key(GT_RASTER_TYPE) == Some(RASTER_PIXEL_IS_POINT) {
            // Raster coordinates name pixel centres: the corner (0, 0) is half a pixel before.
            affine[2] -= 0.5 * (affine[0] + affine[1]);
            affine[5] -= 0.5 * (affine[3] + affine[4]);
        }
        let epsg = key(PROJECTED_CRS).or(key(GEOGRAPHIC_CRS)).filter(|&c| c != 0 && c != 32767);
        Ok(Some(GeoReference { pixel_scale, tiepoints, transformation, geo_keys, geo_doubles, geo_ascii, affine, epsg }))
    }

    /// A north-up reference with square pixels of `pixel_size` map units whose top-left corner is
    /// at `(x0, y0)` in EPSG `epsg` (a projected system), as a generator writes it.
    pub fn north_up(x0: f64, y0: f64, pixel_size: f64, epsg: u16) -> Self {
        // Version 1.1.0, 3 keys: model type projected, raster PixelIsArea, the projected CRS.
        let geo_keys = vec![1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, PROJECTED_CRS, 0, 1, epsg];
        GeoReference::from_tags(
            Some(vec![pixel_size, pixel_size, 0.0]),
            Some(vec![0.0, 0.0, 0.0, x0, y0, 0.0]),
            None,
            Some(geo_keys),
            None,
            None,
        )
        .expect("a valid north-up transform")
        .expect("a transform")
    }
}

/// True when `bytes` start like a TIFF (classic or BigTIFF, either byte order).
pub fn is_tiff(bytes: &[u8]) -> bool {
    matches!(bytes.get(..4), Some([b'I', b'I', 42 | 43, 0]) | Some([b'M', b'M', 0, 42 | 43]))
}

fn tiff_err(e: tiff::TiffError) -> String {
    format!("cannot decode the TIFF: {e}")
}

/// Decode a TIFF scene to RGB with its georeferencing (`None` for a plain TIFF).
///
/// Gray, RGB and RGBA at 8 or 16 bits (alpha dropped; 16-bit bands stretched from their 0.1st to
/// their 99.9th percentile, since satellite products rarely use the full 16-bit range) and
/// multi-band scenes (the first three bands as RGB). Sizes are checked from the header before
/// anything is decoded, with the limits of every other image ([`crate::pre`]).
pub fn decode_geotiff(bytes: &[u8]) -> Result<(RgbImage, Option<GeoReference>), String> {
    let mut limits = Limits::default();
    limits.decoding_buffer_size = MAX_DECODE_BYTES as usize;
    let mut dec = Decoder::new(Cursor::new(bytes)).map_err(tiff_err)?.with_limits(limits);
    let (w, h) = dec.dimensions().map_err(tiff_err)?;
    let (w, h) = (w as usize, h as usize);
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || w * h > MAX_IMAGE_PIXELS {
        return RgbImage::new(h, w, Vec::new()).map(|_| unreachable!()).map_err(|e| e.to_string());
    }
    let f64s = |dec: &mut Decoder<Cursor<&[u8]>>, tag| -> Result<Option<Vec<f64>>, String> {
        dec.find_tag(tag).map_err(tiff_err)?.map(|v| v.into_f64_vec().map_err(tiff_err)).transpose()
    };
    let pixel_scale = f64s(&mut dec, Tag::ModelPixelScaleTag)?;
    let tiepoints = f64s(&mut dec, Tag::ModelTiepointTag)?;
    let transformation = f64s(&mut dec, Tag::ModelTransformationTag)?;
    let geo_doubles = f64s(&mut dec, Tag::GeoDoubleParamsTag)?;
    let geo_keys = dec.find_tag(Tag::GeoKeyDirectoryTag).map_err(tiff_err)?.map(|v| v.into_u16_vec().map_err(tiff_err)).transpose()?;
    let geo_ascii = dec.find_tag(Tag::GeoAsciiParamsTag).map_err(tiff_err)?.map(|v| v.into_string().map_err(tiff_err)).transpose()?;
    let geo = GeoReference::from_tags(pixel_scale, tiepoints, transformation, geo_keys, geo_doubles, geo_ascii)?;

    let (channels, first3) = match dec.colortype().map_err(tiff_err)? {
        ColorType::Gray(8 | 16) => (1, 1),
        ColorType::GrayA(8 | 16) => (2, 1),
        ColorType::RGB(8 | 16) => (3, 3),
        ColorType::RGBA(8 | 16) => (4, 3),
        ColorType::Multiband { bit_depth: 8 | 16, num_samples } if num_samples >= 3 => (num_samples as usize, 3),
        other => return Err(format!("TIFF samples of type {other:?} are not supported (8- or 16-bit gray, RGB, RGBA or multi-band)")),
    };
    let n = w * h;
    let data = match dec.read_image().map_err(tiff_err)? {
        DecodingResult::U8(v) if channels == 3 => v,
        DecodingResult::U8(v) => {
            // Compact in place: RGB needs no more bytes than any layout with ≥ 3 samples.
            let mut v = v;
            if first3 == 3 {
                for p in 0..n {
                    v.copy_within(p * channels..p * channels + 3, p * 3);
                }
                v.truncate(n * 3);
                v
            } else {
                (0..n).flat_map(|p| [v[p * channels]; 3]).collect()
            }
        }
        DecodingResult::U16(v) => {
            let bands: Vec<(u16, u16)> = (0..first3).map(|c| percentile_range(&v, channels, c)).collect();
            let mut out = Vec::with_capacity(n * 3);
            for p in 0..n {
                for c in 0..3 {
                    let (lo, hi) = bands[c.min(first3 - 1)];
                    let x = v[p * channels + c.min(first3 - 1)];
                    let t = (x.saturating_sub(lo)) as f32 / (hi - lo).max(1) as f32;
                    out.push((t * 255.0).round().clamp(0.0, 255.0) as u8);
                }
            }
            out
        }
        _ => return Err("TIFF samples that are not 8- or 16-bit integers are not supported".into()),
    };
    if data.len() != n * 3 {
        return Err(format!("the TIFF's pixel data does not match its {w}×{h} size"));
    }
    let img = RgbImage::new(h, w, data).map_err(|e| e.to_string())?;
    Ok((img, geo))
}

/// The 0.1st and 99.9th percentiles of band `c` of interleaved 16-bit samples.
fn percentile_range(v: &[u16], channels: usize, c: usize) -> (u16, u16) {
    let mut hist = vec![0u64; 65536];
    let mut n = 0u64;
    for x in v.iter().skip(c).step_by(channels) {
        hist[*x as usize] += 1;
        n += 1;
    }
    let at = |q: f64| {
        let target = (q * n as f64) as u64;
        let mut acc = 0;
        for (i, &h) in hist.iter().enumerate() {
            acc += h;
            if acc > target {
                return i as u16;
            }
        }
        u16::MAX
    };
    let (lo, hi) = (at(0.001), at(0.999));
    (lo, hi.max(lo + 1))
}

/// The scene mask (`height × width`, nonzero = object) as a one-band 8-bit GeoTIFF (255 =
/// object, LZW-compressed) carrying the scene's georeferencing tags unchanged.
pub fn encode_mask_geotiff(mask: &[u8], width: usize, height: usize, geo: Option<&GeoReference>) -> Result<Vec<u8>, String> {
    if mask.len() != width * height || width == 0 || height == 0 {
        return Err(format!("a mask of {} pixels does not match {width}×{height}", mask.len()));
    }
    let binary: Vec<u8> = mask.iter().map(|&m| if m != 0 { 255 } else { 0 }).collect();
    encode::<colortype::Gray8>(width, height, &binary, geo).map_err(|e| format!("cannot encode the mask GeoTIFF: {e}"))
}

/// Write an RGB scene as a GeoTIFF (LZW), e.g. a generated test scene.
pub fn encode_rgb_geotiff(img: &RgbImage, geo: Option<&GeoReference>) -> Result<Vec<u8>, String> {
    encode::<colortype::RGB8>(img.width, img.height, &img.data, geo).map_err(|e| format!("cannot encode the GeoTIFF: {e}"))
}

/// One LZW-compressed image of colour type `C` with the georeferencing tags that `geo` has.
fn encode<C: colortype::ColorType<Inner = u8>>(width: usize, height: usize, data: &[u8], geo: Option<&GeoReference>) -> tiff::TiffResult<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut out)?.with_compression(Compression::Lzw);
    let mut image = enc.new_image::<C>(width as u32, height as u32)?;
    if let Some(g) = geo {
        let e = image.encoder();
        for (tag, v) in [
            (Tag::ModelPixelScaleTag, &g.pixel_scale),
            (Tag::ModelTiepointTag, &g.tiepoints),
            (Tag::ModelTransformationTag, &g.transformation),
            (Tag::GeoDoubleParamsTag, &g.geo_doubles),
        ] {
            if let Some(v) = v {
                e.write_tag(tag, v.as_slice())?;
            }
        }
        if let Some(v) = &g.geo_keys {
            e.write_tag(Tag::GeoKeyDirectoryTag, v.as_slice())?;
        }
        if let Some(v) = &g.geo_ascii {
            e.write_tag(Tag::GeoAsciiParamsTag, v.as_str())?;
        }
    }
    // Whole-image writes (the crate picks the strips); its strip-by-strip path with compression
    // wrote streams its own decoder rejects.
    image.write_data(data)?;
    drop(enc);
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn georeferencing_survives_a_round_trip() {
        let geo = GeoReference::north_up(500_000.0, 4_200_000.0, 0.5, 32633);
        assert_eq!(geo.to_map(0.0, 0.0), (500_000.0, 4_200_000.0));
        assert_eq!(geo.to_map(10.0, 4.0), (500_005.0, 4_199_998.0));
        assert_eq!(geo.epsg, Some(32633));
        let data: Vec<u8> = (0..40 * 30 * 3).map(|i| (i % 251) as u8).collect();
        let img = RgbImage::new(30, 40, data).unwrap();
        let bytes = encode_rgb_geotiff(&img, Some(&geo)).unwrap();
        assert!(is_tiff(&bytes));
        let (back, back_geo) = decode_geotiff(&bytes).unwrap();
        assert_eq!(back, img);
        assert_eq!(back_geo.as_ref(), Some(&geo));

        let mask: Vec<u8> = (0..40 * 30).map(|i| (i % 7 == 0) as u8).collect();
        let tif = encode_mask_geotiff(&mask, 40, 30, Some(&geo)).unwrap();
        let mut dec = Decoder::new(Cursor::new(tif.as_slice())).unwrap();
        assert_eq!(dec.get_tag_f64_vec(Tag::ModelTiepointTag).unwrap(), geo.tiepoints.clone().unwrap());
        match dec.read_image().unwrap() {
            DecodingResult::U8(v) => assert_eq!(v, mask.iter().map(|&m| m * 255).collect::<Vec<_>>()),
            _ => panic!("not 8-bit"),
        }
    }

    #[test]
    fn pixel_is_point_shifts_half_a_pixel() {
        let keys = vec![1, 1, 0, 1, GT_RASTER_TYPE, 0, 1, RASTER_PIXEL_IS_POINT];
        let g = GeoReference::from_tags(Some(vec![2.0, 2.0, 0.0]), Some(vec![0.0, 0.0, 0.0, 100.0, 50.0, 0.0]), None, Some(keys), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(g.to_map(0.0, 0.0), (99.0, 51.0));
        assert_eq!(g.epsg, None);
    }

    #[test]
    fn bad_tiffs_are_refused_by_name() {
        assert!(decode_geotiff(b"II*\0garbage").is_err());
        let degenerate = GeoReference::from_tags(Some(vec![0.0, 0.0, 0.0]), Some(vec![0.0; 6]), None, None, None, None);
        assert!(degenerate.unwrap_err().contains("degenerate"));
        assert!(encode_mask_geotiff(&[0; 3], 2, 2, None).is_err());
    }
}
