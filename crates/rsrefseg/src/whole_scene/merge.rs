//! Merging the tiles' mask logits into one scene mask in a band of rows.
//!
//! Each scene pixel gets the weighted mean of the logits of the tiles that answered over it
//! (weights from [`super::grid::TileGrid::weights`]) and is in the mask when that mean is
//! positive; pixels no answered tile covers are background. Tiles arrive row by row, so only the
//! rows the current tile row can still touch are held as sums (`width × tile` pairs of f32, e.g.
//! 16 MiB for an 8192-pixel-wide scene and 256-pixel tiles); finished rows go straight into the
//! scene mask (one byte per pixel). The logits of the whole scene are never held.

/// Weighted sums of tile logits over a band of scene rows, and the finished mask above it.
pub struct BandMerger {
    width: usize,
    height: usize,
    /// First scene row the band holds.
    top: usize,
    /// Rows the band holds.
    rows: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
    /// `height × width`, 255 = object; rows above `top` are final.
    mask: Vec<u8>,
}

impl BandMerger {
    /// A merger for a `width × height` scene whose tiles are at most `band_rows` rows high.
    pub fn new(width: usize, height: usize, band_rows: usize) -> Self {
        let rows = band_rows.min(height);
        BandMerger {
            width,
            height,
            top: 0,
            rows,
            sum: vec![0.0; width * rows],
            weight: vec![0.0; width * rows],
            mask: vec![0; width * height],
        }
    }

    /// Add one tile's logits `h × w` at `(x0, y0)` with per-column and per-row weights.
    pub fn add(&mut self, x0: usize, y0: usize, w: usize, h: usize, logits: &[f32], wx: &[f32], wy: &[f32]) -> Result<(), String> {
        if logits.len() != w * h || wx.len() != w || wy.len() != h || x0 + w > self.width || y0 + h > self.height {
            return Err(format!("a tile answer of {w}×{h} at ({x0}, {y0}) does not fit the scene"));
        }
        if y0 < self.top || y0 + h > self.top + self.rows {
            return Err(format!("tile rows {y0}..{} arrived outside the open band {}..{}", y0 + h, self.top, self.top + self.rows));
        }
        for (dy, row) in logits.chunks_exact(w).enumerate() {
            let base = (y0 + dy - self.top) * self.width + x0;
            for (dx, &l) in row.iter().enumerate() {
                let k = wx[dx] * wy[dy];
                self.sum[base + dx] += k * l;
                self.weight[base + dx] += k;
            }
        }
        Ok(())
    }

    /// Rows above `y` will get no more tiles: decide them and move the band down to `y`.
    pub fn finish_until(&mut self, y: usize) {
        let y = y.min(self.height);
        if y <= self.top {
            return;
        }
        let done = (y - self.top).min(self.rows);
        for i in 0..done * self.width {
            let inside = self.weight[i] > 0.0 && self.sum[i] > 0.0;
            self.mask[self.top * self.width + i] = if inside { 255 } else { 0 };
        }
        // Rows between the band's end and `y` (no tile touched them) stay background.
        let n = self.rows * self.width;
        self.sum.copy_within(done * self.width..n, 0);
        self.weight.copy_within(done * self.width..n, 0);
        self.sum[n - done * self.width..].fill(0.0);
        self.weight[n - done * self.width..].fill(0.0);
        self.top = y;
    }

    /// The scene mask, `height × width`, 255 = object.
    pub fn finish(mut self) -> Vec<u8> {
        self.finish_until(self.height);
        self.mask
    }

    /// Bytes the merger holds (the band and the mask).
    pub fn bytes(&self) -> usize {
        self.sum.len() * 8 + self.mask.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_tiles_are_blended_by_weight() {
        let mut m = BandMerger::new(6, 4, 4);
        // Two 4×4 tiles overlapping in columns 2..4: the left says object (+1), the right says
        // background (−3) but with a third of the weight on the overlap.
        m.add(0, 0, 4, 4, &[1.0; 16], &[1.0; 4], &[1.0; 4]).unwrap();
        m.add(2, 0, 4, 4, &[-3.0; 16], &[0.25, 0.25, 1.0, 1.0], &[1.0; 4]).unwrap();
        let mask = m.finish();
        // Columns 0..2 only the left (+1), 2..4 mean (1 − 0.75)/1.25 > 0, 4..6 only the right.
        assert_eq!(&mask[0..6], &[255, 255, 255, 255, 0, 0]);
    }

    #[test]
    fn the_band_moves_down_and_skipped_rows_stay_background() {
        let mut m = BandMerger::new(2, 10, 3);
        m.add(0, 0, 2, 3, &[1.0; 6], &[1.0; 2], &[1.0; 3]).unwrap();
        m.finish_until(7);
        assert!(m.add(0, 2, 2, 3, &[1.0; 6], &[1.0; 2], &[1.0; 3]).is_err(), "rows already final");
        m.add(0, 7, 2, 3, &[2.0; 6], &[1.0; 2], &[1.0; 3]).unwrap();
        let mask = m.finish();
        assert_eq!(mask.iter().filter(|&&v| v == 255).count(), 12);
        assert!(mask[6..14].iter().all(|&v| v == 0));
    }
}
