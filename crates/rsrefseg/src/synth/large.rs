//! Whole scenes for the tiled pipeline ([`crate::whole_scene`]): a canvas far larger than the
//! model's input, made of `cells × cells` benchmark cells at the benchmark's own scale (256 px
//! per cell, so every object looks as it did in training), with referring expressions whose
//! referent is unique **in the whole canvas**.
//!
//! Most cells are bare ground (the scene generator with no object); a few are full scenes. A
//! handful of those are *target* cells: one expression of each names one of its objects. Every
//! other full cell is a *distractor* kept only if none of the targets' expressions resolves in
//! it, so "the red building" names exactly one object of the canvas. Only expression forms that
//! keep their meaning at scene scale are used: a category, a colour, a relation to an anchor and
//! "between" (not image regions, ordinals or superlatives, which refer to the cell's frame).
//!
//! A pure function of `(seed, cells, targets)`, like the rest of the generator.

use super::expressions::{generate_expressions, names_nothing, Expression};
use super::scene::generate_scene;
use super::{SynthConfig, SynthRng};

/// Side of one cell in pixels: the benchmark's scene size.
pub const CELL: usize = 256;

/// Expression forms that mean the same in the whole canvas as in their cell.
pub const SCENE_KINDS: [&str; 4] = ["category", "colour", "relation", "between"];

/// One referring expression of a large scene and the exact mask of its referent.
#[derive(Clone, Debug, PartialEq)]
pub struct LargeTarget {
    pub sentence: String,
    pub kind: &'static str,
    pub category: &'static str,
    /// The referent's box in canvas pixels `[x0, y0, x1, y1]` (`x1`/`y1` exclusive).
    pub bbox: [usize; 4],
    /// The referent's mask over `bbox`, row-major, 1 inside.
    pub mask: Vec<u8>,
}

impl LargeTarget {
    pub fn area(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0).count()
    }
}

/// A generated large scene.
#[derive(Clone, Debug, PartialEq)]
pub struct LargeScene {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB bytes.
    pub image: Vec<u8>,
    pub targets: Vec<LargeTarget>,
    /// Full cells that are neither targets nor bare (each checked against every target).
    pub distractor_cells: usize,
}

/// Largest canvas the generator makes: the pipeline's pixel limit (8192², 32 × 32 cells).
pub const MAX_CELLS: usize = 32;

/// A canvas of `cells × cells` cells with `targets` target cells and about a quarter of the rest
/// as distractor cells. `cells` in `1..=32`; `targets` at most the number of cells.
pub fn generate_large_scene(seed: u64, cells: usize, targets: usize) -> Result<LargeScene, String> {
    if cells == 0 || cells > MAX_CELLS {
        return Err(format!("a large scene has 1 to {MAX_CELLS} cells a side (got {cells})"));
    }
    let n_cells = cells * cells;
    if targets == 0 || targets > n_cells {
        return Err(format!("a scene of {cells}×{cells} cells holds 1 to {n_cells} targets (got {targets})"));
    }
    let side = cells * CELL;
    let mut rng = SynthRng::for_scene(seed, u64::MAX);
    let mut order: Vec<usize> = (0..n_cells).collect();
    rng.shuffle(&mut order);
    let full = SynthConfig::default();
    let bare = SynthConfig { min_objects: 0, max_objects: 0, ..SynthConfig::default() };

    // Target cells: the first cells of the shuffled order that yield a scene-scale expression
    // not already used (each from its own stream, so a cell is the same whatever else is asked).
    let mut picked: Vec<(usize, super::scene::Scene, Expression)> = Vec::new();
    let mut attempt = 0u64;
    for &cell in order.iter() {
        if picked.len() == targets {
            break;
        }
        // Several tries per cell: every target must name nothing in the other target cells, which
        // gets harder with every target placed.
        for _ in 0..16 {
            attempt += 1;
            let mut r = SynthRng::for_scene(seed, attempt);
            let scene = generate_scene(&full, &mut r);
            let exprs = generate_expressions(&scene, 16, &mut r);
            let chosen = exprs.into_iter().find(|e| {
                SCENE_KINDS.contains(&e.expr.kind())
                    && picked.iter().all(|(_, s, p)| p.sent != e.sent && names_nothing(&e.expr, s) && names_nothing(&p.expr, &scene))
            });
            if let Some(e) = chosen {
                picked.push((cell, scene, e));
                break;
            }
        }
    }
    if picked.len() < targets {
        return Err(format!("only {} distinct targets fit in {cells}×{cells} cells", picked.len()));
    }

    let mut image = vec![0u8; side * side * 3];
    let mut paste = |cell: usize, pixels: &[u8]| {
        let (cy, cx) = (cell / cells, cell % cells);
        for y in 0..CELL {
            let dst = ((cy * CELL + y) * side + cx * CELL) * 3;
            image[dst..dst + CELL * 3].copy_from_slice(&pixels[y * CELL * 3..(y + 1) * CELL * 3]);
        }
    };
    let mut out_targets = Vec::with_capacity(targets);
    for (cell, scene, e) in &picked {
        paste(*cell, &scene.image);
        let o = &scene.objects[e.target];
        let (cy, cx) = (cell / cells, cell % cells);
        let [bx0, by0, bx1, by1] = o.bbox.map(|v| v as usize);
        let mut mask = Vec::with_capacity((bx1 - bx0) * (by1 - by0));
        for y in by0..by1 {
            mask.extend_from_slice(&o.mask[y * CELL + bx0..y * CELL + bx1]);
        }
        out_targets.push(LargeTarget {
            sentence: e.sent.clone(),
            kind: e.expr.kind(),
            category: o.category.name(),
            bbox: [cx * CELL + bx0, cy * CELL + by0, cx * CELL + bx1, cy * CELL + by1],
            mask,
        });
    }
    let mut distractor_cells = 0;
    for &cell in order.iter().skip(picked.len()) {
        attempt += 1;
        let mut r = SynthRng::for_scene(seed, attempt);
        let mut pixels = None;
        if r.chance(0.25) {
            // A few draws: busy scenes often hold something a target names.
            for _ in 0..6 {
                let scene = generate_scene(&full, &mut r);
                if picked.iter().all(|(_, _, p)| names_nothing(&p.expr, &scene)) {
                    pixels = Some(scene.image);
                    distractor_cells += 1;
                    break;
                }
            }
        }
        let pixels = pixels.unwrap_or_else(|| generate_scene(&bare, &mut r).image);
        paste(cell, &pixels);
    }
    Ok(LargeScene { width: side, height: side, image, targets: out_targets, distractor_cells })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_unique_and_masks_sit_in_the_canvas() {
        let s = generate_large_scene(7, 4, 3).unwrap();
        assert_eq!((s.width, s.height, s.image.len()), (1024, 1024, 1024 * 1024 * 3));
        assert_eq!(s.targets.len(), 3);
        for t in &s.targets {
            let [x0, y0, x1, y1] = t.bbox;
            assert!(x1 <= 1024 && y1 <= 1024 && x0 < x1 && y0 < y1);
            assert_eq!(t.mask.len(), (x1 - x0) * (y1 - y0));
            assert!(t.area() > 0);
            assert!(SCENE_KINDS.contains(&t.kind));
        }
        let sentences: std::collections::HashSet<_> = s.targets.iter().map(|t| &t.sentence).collect();
        assert_eq!(sentences.len(), 3);
        assert_eq!(s, generate_large_scene(7, 4, 3).unwrap(), "not reproducible");
        assert!(generate_large_scene(7, 33, 1).is_err());
        assert!(generate_large_scene(7, 2, 5).is_err());
    }
}
