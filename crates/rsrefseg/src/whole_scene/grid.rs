//! The tile grid of a whole scene: model-input-sized tiles with overlap, the last tile of each
//! row and column flush with the scene's edge (no padding beyond the scene), and the feathering
//! weights that blend overlapping tiles' logits.

/// One tile, in scene pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tile {
    pub row: usize,
    pub col: usize,
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
}

impl Tile {
    /// `[x0, y0, x1, y1)` in scene pixels.
    pub fn bounds(&self) -> [usize; 4] {
        [self.x0, self.y0, self.x0 + self.width, self.y0 + self.height]
    }

    /// The two tiles share at least one pixel.
    pub fn overlaps(&self, other: &Tile) -> bool {
        let ([ax0, ay0, ax1, ay1], [bx0, by0, bx1, by1]) = (self.bounds(), other.bounds());
        ax0 < bx1 && bx0 < ax1 && ay0 < by1 && by0 < ay1
    }

    /// The box `[x0, y0, x1, y1]` lies inside the tile.
    pub fn contains(&self, [x0, y0, x1, y1]: [usize; 4]) -> bool {
        let [tx0, ty0, tx1, ty1] = self.bounds();
        tx0 <= x0 && ty0 <= y0 && x1 <= tx1 && y1 <= ty1
    }
}

/// Tiles of `tile × tile` pixels (smaller only when the scene is) stepping by `tile − overlap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileGrid {
    pub width: usize,
    pub height: usize,
    pub tile: usize,
    pub overlap: usize,
    xs: Vec<usize>,
    ys: Vec<usize>,
}

/// Tile starts along one axis of `len` pixels: every `stride` from 0, the last one at
/// `len − tile` so that no tile leaves the scene.
fn starts(len: usize, tile: usize, stride: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let mut out: Vec<usize> = (0..).map(|k| k * stride).take_while(|&s| s + tile < len).collect();
    out.push(len - tile);
    out.dedup();
    out
}

impl TileGrid {
    pub fn new(width: usize, height: usize, tile: usize, overlap: usize) -> Result<Self, String> {
        if width == 0 || height == 0 {
            return Err(format!("the scene is empty ({width}×{height})"));
        }
        if tile < 16 {
            return Err(format!("a tile of {tile} pixels is too small (at least 16)"));
        }
        if overlap * 2 > tile {
            return Err(format!("an overlap of {overlap} pixels is more than half the tile ({tile})"));
        }
        let stride = tile - overlap;
        Ok(TileGrid { width, height, tile, overlap, xs: starts(width, tile, stride), ys: starts(height, tile, stride) })
    }

    pub fn rows(&self) -> usize {
        self.ys.len()
    }

    pub fn cols(&self) -> usize {
        self.xs.len()
    }

    pub fn len(&self) -> usize {
        self.rows() * self.cols()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tile(&self, row: usize, col: usize) -> Tile {
        Tile {
            row,
            col,
            x0: self.xs[col],
            y0: self.ys[row],
            width: self.tile.min(self.width),
            height: self.tile.min(self.height),
        }
    }

    /// Every tile, row by row (the order the merger needs).
    pub fn tiles(&self) -> Vec<Tile> {
        (0..self.rows()).flat_map(|r| (0..self.cols()).map(move |c| self.tile(r, c))).collect()
    }

    /// First scene row of tile row `row` (the scene's height past the last row).
    pub fn row_start(&self, row: usize) -> usize {
        self.ys.get(row).copied().unwrap_or(self.height)
    }

    /// Feathering weights along one side of `n` pixels of a tile: rising linearly over the
    /// overlap from each edge, so that where two tiles overlap the one whose centre is nearer
    /// counts more, and a pixel near a tile's edge — where the model saw little context — counts
    /// least. Never zero: at the scene's border one tile alone covers a pixel.
    pub fn weights(&self, n: usize) -> Vec<f32> {
        let ramp = self.overlap.max(1) as f32;
        (0..n).map(|i| ((i.min(n - 1 - i) as f32 + 0.5) / ramp).min(1.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_scene_and_stay_inside() {
        let g = TileGrid::new(1000, 300, 256, 64).unwrap();
        assert_eq!(g.xs, vec![0, 192, 384, 576, 744]);
        assert_eq!(g.ys, vec![0, 44]);
        let mut covered = vec![false; 1000 * 300];
        for t in g.tiles() {
            assert!(t.x0 + t.width <= 1000 && t.y0 + t.height <= 300);
            for y in t.y0..t.y0 + t.height {
                for x in t.x0..t.x0 + t.width {
                    covered[y * 1000 + x] = true;
                }
            }
        }
        assert!(covered.iter().all(|&c| c));
        let small = TileGrid::new(100, 80, 256, 64).unwrap();
        assert_eq!((small.len(), small.tile(0, 0).width, small.tile(0, 0).height), (1, 100, 80));
        assert!(TileGrid::new(100, 100, 256, 200).is_err());
        assert!(TileGrid::new(0, 100, 256, 0).is_err());
    }

    #[test]
    fn weights_ramp_over_the_overlap() {
        let g = TileGrid::new(512, 512, 16, 4).unwrap();
        assert_eq!(g.weights(8), vec![0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125]);
        assert!(g.weights(1)[0] > 0.0);
    }
}
