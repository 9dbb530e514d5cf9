//! Line charts of a training run as PNG (axes, lines, a legend of coloured boxes in series
//! order), drawn with `image` alone so that no font or system library is needed.

use image::{Rgb, RgbImage};
use std::path::Path;

pub struct Series {
    pub points: Vec<(f64, f64)>,
    pub colour: [u8; 3],
}

/// Distinct colours for up to eight series.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

const W: u32 = 800;
const H: u32 = 450;
const LEFT: u32 = 50;
const RIGHT: u32 = 20;
const TOP: u32 = 40;
const BOTTOM: u32 = 40;

/// Draw `series` (x = step) into a `W×H` PNG. The y range covers every finite value (0 is
/// included so that the scale is comparable between plots); ticks mark tenths of each axis.
pub fn line_chart(series: &[Series], path: &Path) -> Result<(), String> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let finite = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0f64, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let px = |x: f64| LEFT as f64 + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| (H - BOTTOM) as f64 - (y - y0) / (y1 - y0) * ph;

    // Grid, axes and ticks.
    let grey = Rgb([225, 225, 225]);
    let black = Rgb([0, 0, 0]);
    for k in 0..=10 {
        let gx = LEFT as f64 + pw * k as f64 / 10.0;
        let gy = TOP as f64 + ph * k as f64 / 10.0;
        line(&mut img, (gx, TOP as f64), (gx, (H - BOTTOM) as f64), grey);
        line(&mut img, (LEFT as f64, gy), ((W - RIGHT) as f64, gy), grey);
        line(&mut img, (gx, (H - BOTTOM) as f64), (gx, (H - BOTTOM + 5) as f64), black);
        line(&mut img, ((LEFT - 5) as f64, gy), (LEFT as f64, gy), black);
    }
    line(&mut img, (LEFT as f64, TOP as f64), (LEFT as f64, (H - BOTTOM) as f64), black);
    line(&mut img, (LEFT as f64, (H - BOTTOM) as f64), ((W - RIGHT) as f64, (H - BOTTOM) as f64), black);
    if y0 < 0.0 {
        line(&mut img, (LEFT as f64, py(0.0)), ((W - RIGHT) as f64, py(0.0)), Rgb([150, 150, 150]));
    }

    for s in series {
        let c = Rgb(s.colour);
        let pts: Vec<(f64, f64)> =
            s.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| (px(x), py(y))).collect();
        for w in pts.windows(2) {
            thick_line(&mut img, w[0], w[1], c);
        }
        for &p in &pts {
            if pts.len() == 1 || s.points.len() < 40 {
                fill_rect(&mut img, p.0 as i64 - 2, p.1 as i64 - 2, 5, 5, c);
            }
        }
    }

    // Legend: one coloured box per series, in order, along the top.
    for (i, s) in series.iter().enumerate() {
        let x = LEFT as i64 + 10 + 30 * i as i64;
        fill_rect(&mut img, x - 1, 11, 20, 20, Rgb([0, 0, 0]));
        fill_rect(&mut img, x, 12, 18, 18, Rgb(s.colour));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    img.save(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(img, xx, yy, c);
        }
    }
}

/// A one-pixel line by uniform sampling along its longer extent.
fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), c: Rgb<u8>) {
    let n = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
    for k in 0..=n {
        let t = k as f64 / n as f64;
        put(img, (a.0 + (b.0 - a.0) * t).round() as i64, (a.1 + (b.1 - a.1) * t).round() as i64, c);
    }
}

fn thick_line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), c: Rgb<u8>) {
    for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
        line(img, (a.0 + dx, a.1 + dy), (b.0 + dx, b.1 + dy), c);
    }
}
