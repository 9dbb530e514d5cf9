//! The scene mask as polygons in the scene's coordinate system, written as GeoJSON.
//!
//! Outlines are traced with marching squares (the `contour` crate, a port of d3-contour: every
//! pixel is the unit cell `[col, col + 1] × [row, row + 1]`, outer rings and holes kept) on the
//! mask's bounding box only, then mapped through the scene's affine transform
//! ([`super::geotiff::GeoReference`]) and written with the `geojson` crate. Without
//! georeferencing the coordinates are scene pixels (x right, y down).

use super::geotiff::GeoReference;
use contour::ContourBuilder;
use geo_types::{Coord, LineString, MultiPolygon, Polygon};
use geojson::{Feature, FeatureCollection, Geometry, GeometryValue, JsonObject};
use serde_json::json;

/// Largest grid the tracer works on (values are f64): a mask spread over more pixels is traced
/// at a coarser integer step so that memory stays bounded (128 MiB).
pub const MAX_TRACE_PIXELS: usize = 16 << 20;

/// The traced outline of a mask.
#[derive(Clone, Debug)]
pub struct MaskPolygons {
    /// In map coordinates (or scene pixels without georeferencing).
    pub polygons: MultiPolygon<f64>,
    /// Pixels per traced cell along each axis (1 unless the mask spread too wide).
    pub step: usize,
}

/// Trace the outlines of `mask` (`height × width`, nonzero = object).
pub fn trace(mask: &[u8], width: usize, height: usize, geo: Option<&GeoReference>) -> Result<MaskPolygons, String> {
    if mask.len() != width * height {
        return Err(format!("a mask of {} pixels does not match {width}×{height}", mask.len()));
    }
    // Bounding box of the object pixels.
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (y, row) in mask.chunks_exact(width.max(1)).enumerate() {
        if let (Some(a), Some(b)) = (row.iter().position(|&m| m != 0), row.iter().rposition(|&m| m != 0)) {
            (x0, x1, y0, y1) = (x0.min(a), x1.max(b + 1), y0.min(y), y + 1);
        }
    }
    if x0 == usize::MAX {
        return Ok(MaskPolygons { polygons: MultiPolygon::new(vec![]), step: 1 });
    }
    let (bw, bh) = (x1 - x0, y1 - y0);
    let mut step = 1;
    while bw.div_ceil(step) * bh.div_ceil(step) > MAX_TRACE_PIXELS {
        step += 1;
    }
    let (gw, gh) = (bw.div_ceil(step), bh.div_ceil(step));
    // A coarse cell is inside when most of its pixels are.
    let mut grid = vec![0f64; gw * gh];
    for gy in 0..gh {
        for gx in 0..gw {
            let (mut on, mut all) = (0, 0);
            for y in y0 + gy * step..(y0 + (gy + 1) * step).min(y1) {
                for x in x0 + gx * step..(x0 + (gx + 1) * step).min(x1) {
                    on += (mask[y * width + x] != 0) as usize;
                    all += 1;
                }
            }
            grid[gy * gw + gx] = (2 * on > all) as u8 as f64;
        }
    }
    let contours = ContourBuilder::new(gw, gh, false)
        .contours(&grid, &[0.5])
        .map_err(|e| format!("cannot trace the mask's outline: {e:?}"))?;
    let to_map = |c: &Coord<f64>| {
        let (col, row) = ((x0 as f64) + c.x * step as f64, (y0 as f64) + c.y * step as f64);
        let (x, y) = geo.map_or((col, row), |g| g.to_map(col, row));
        Coord { x, y }
    };
    let ring = |l: &LineString<f64>| LineString::new(l.0.iter().map(to_map).collect());
    let polygons = contours
        .into_iter()
        .flat_map(|c| c.into_inner().0 .0)
        .map(|p| Polygon::new(ring(p.exterior()), p.interiors().iter().map(ring).collect()))
        .collect();
    Ok(MaskPolygons { polygons: MultiPolygon::new(polygons), step })
}

/// Shoelace area of a polygon (outer ring minus holes), in squared coordinate units.
pub fn polygon_area(p: &Polygon<f64>) -> f64 {
    let ring = |l: &LineString<f64>| {
        l.0.windows(2).map(|w| w[0].x * w[1].y - w[1].x * w[0].y).sum::<f64>().abs() / 2.0
    };
    ring(p.exterior()) - p.interiors().iter().map(ring).sum::<f64>()
}

/// A GeoJSON FeatureCollection with one feature per polygon (properties: `sentence`, `area`
/// in squared map units or pixels) and, for a scene with an EPSG code, the legacy `crs` member
/// naming it (RFC 7946 assumes WGS 84; GIS tools read `crs` for projected coordinates).
pub fn to_geojson(traced: &MaskPolygons, sentence: &str, geo: Option<&GeoReference>) -> String {
    let features: Vec<Feature> = traced
        .polygons
        .0
        .iter()
        .map(|p| {
            let mut props = JsonObject::new();
            props.insert("sentence".into(), json!(sentence));
            props.insert("area".into(), json!(polygon_area(p)));
            props.insert("units".into(), json!(if geo.is_some() { "map" } else { "pixels" }));
            Feature { geometry: Some(Geometry::new(GeometryValue::from(p))), properties: Some(props), ..Default::default() }
        })
        .collect();
    let mut fc = FeatureCollection::new(features);
    if let Some(code) = geo.and_then(|g| g.epsg) {
        let mut members = JsonObject::new();
        members.insert("crs".into(), json!({"type": "name", "properties": {"name": format!("urn:ogc:def:crs:EPSG::{code}")}}));
        fc.foreign_members = Some(members);
    }
    fc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlines_follow_pixel_cells_and_the_transform() {
        // A 4×3 block and a 2×2 block with a hole-free gap, in a 12×8 mask.
        let (w, h) = (12, 8);
        let mut mask = vec![0u8; w * h];
        for y in 2..5 {
            for x in 1..5 {
                mask[y * w + x] = 1;
            }
        }
        for y in 5..7 {
            for x in 8..10 {
                mask[y * w + x] = 1;
            }
        }
        let t = trace(&mask, w, h, None).unwrap();
        assert_eq!((t.polygons.0.len(), t.step), (2, 1));
        let mut areas: Vec<f64> = t.polygons.0.iter().map(polygon_area).collect();
        areas.sort_by(f64::total_cmp);
        // Marching squares cuts each corner by half a pixel triangle (⅛ px²).
        assert!((areas[0] - 3.5).abs() < 1e-9 && (areas[1] - 11.5).abs() < 1e-9, "{areas:?}");
        let xs: Vec<f64> = t.polygons.0.iter().flat_map(|p| p.exterior().0.iter().map(|c| c.x)).collect();
        assert_eq!(xs.iter().copied().fold(f64::INFINITY, f64::min), 1.0);
        assert_eq!(xs.iter().copied().fold(f64::NEG_INFINITY, f64::max), 10.0);

        let geo = GeoReference::north_up(1000.0, 2000.0, 0.5, 32633);
        let g = trace(&mask, w, h, Some(&geo)).unwrap();
        let map_areas: f64 = g.polygons.0.iter().map(polygon_area).sum();
        assert!((map_areas - 15.0 * 0.25).abs() < 1e-9);
        let json: serde_json::Value = serde_json::from_str(&to_geojson(&g, "the red ship", Some(&geo))).unwrap();
        assert_eq!(json["type"], "FeatureCollection");
        assert_eq!(json["features"].as_array().unwrap().len(), 2);
        assert_eq!(json["crs"]["properties"]["name"], "urn:ogc:def:crs:EPSG::32633");
        assert_eq!(json["features"][0]["properties"]["sentence"], "the red ship");
        let x = json["features"][0]["geometry"]["coordinates"][0][0][0].as_f64().unwrap();
        assert!((1000.0..1006.0).contains(&x));
    }

    #[test]
    fn empty_masks_give_no_polygon_and_sizes_are_checked() {
        assert!(trace(&[0; 6], 3, 2, None).unwrap().polygons.0.is_empty());
        assert!(trace(&[0; 5], 3, 2, None).is_err());
    }
}
