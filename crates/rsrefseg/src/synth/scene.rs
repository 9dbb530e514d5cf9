//! Scenes: a textured ground (fields, grass, trees, water, roads, urban blocks, tarmac), objects
//! placed where their category belongs (ships on water, vehicles on roads and paved ground,
//! airplanes on aprons), shadows cast by one sun, and the exact mask of every object.
//!
//! Objects never touch: each keeps a free margin around itself and its shadow, so the masks are
//! disjoint and every mask pixel shows its own object.

use super::objects::{random_object, shadow_height, Category, Colour, ObjectSpec, Shape};
use super::{SynthConfig, SynthRng};
use std::f32::consts::{FRAC_PI_2, PI, TAU};

/// What kind of place the scene shows; decides the ground layout and which objects appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SceneKind {
    Harbour,
    Airport,
    Urban,
    Rural,
    Industrial,
}

/// Ground cover of one pixel; decides where an object may stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Material {
    Grass,
    Trees,
    Field,
    Soil,
    Water,
    Road,
    Concrete,
    Tarmac,
}

/// One placed object, with facts measured on its mask (not on its nominal geometry), which is
/// what a sentence about it refers to.
#[derive(Clone, Debug, PartialEq)]
pub struct SceneObject {
    pub category: Category,
    pub colour: Colour,
    /// Row-major `height × width`, 1 inside the object.
    pub mask: Vec<u8>,
    /// Number of mask pixels.
    pub area: usize,
    /// Mask box in pixel edges: `[x0, y0, x1, y1]`, `x1`/`y1` exclusive.
    pub bbox: [f32; 4],
    /// Mean of the mask's pixel centres `(x, y)`.
    pub centroid: (f32, f32),
    pub spec: ObjectSpec,
}

/// A rendered scene.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub kind: SceneKind,
    pub width: usize,
    pub height: usize,
    /// Row-major RGB bytes.
    pub image: Vec<u8>,
    pub objects: Vec<SceneObject>,
}

/// Generate one scene from `rng` (see [`SynthRng::for_scene`]).
pub fn generate_scene(config: &SynthConfig, rng: &mut SynthRng) -> Scene {
    let size = config.image_size;
    let scale = size as f32 / 256.0;
    let kind = *rng.pick(&[SceneKind::Harbour, SceneKind::Airport, SceneKind::Urban, SceneKind::Rural, SceneKind::Industrial]);
    let layout = Layout::random(kind, size, scale, rng);
    let sun_angle = rng.range(0.0, TAU);
    let sun = (sun_angle.cos(), sun_angle.sin());
    let (materials, mut rgb) = layout.paint(size, rng.next_u64(), sun);

    // Objects: categories drawn from the scene kind's mix, then placed by rejection sampling.
    // The larger of two draws: busy scenes give more same-category objects to tell apart.
    let n_target = rng.below(config.min_objects, config.max_objects + 1).max(rng.below(config.min_objects, config.max_objects + 1));
    let weights = layout.category_weights();
    let mut occupied = vec![false; size * size];
    let mut specs: Vec<ObjectSpec> = Vec::new();
    let mut attempts = 0;
    // Crowded layouts reject many draws; keep going (longer) until the minimum is reached.
    while specs.len() < n_target && (attempts < n_target * 6 || (specs.len() < config.min_objects && attempts < 400)) {
        attempts += 1;
        let category = Category::ALL[rng.weighted(&weights)];
        let (colour, shape, base) = random_object(category, rng, scale);
        if let Some(spec) = place(&layout, &materials, &mut occupied, size, category, colour, shape, base, sun, rng) {
            specs.push(spec);
        }
    }

    // Ship wakes first (ground detail), then shadows, then the objects on top.
    for spec in &specs {
        if let Shape::Ship { length, beam, .. } = spec.shape {
            if rng.chance(0.5) {
                draw_wake(&mut rgb, &materials, size, spec, length, beam);
            }
        }
    }
    for spec in &specs {
        draw_shadow(&mut rgb, size, spec, sun);
    }
    let mut objects = Vec::with_capacity(specs.len());
    for spec in specs {
        let mask = draw_object(&mut rgb, size, &spec, sun);
        objects.push(measure(spec, mask, size));
    }

    let image = finish(&rgb, size, rng);
    Scene { kind, width: size, height: size, image, objects }
}

// ---------------------------------------------------------------------------------------------
// Ground layout

/// A straight strip across the image (road, runway).
#[derive(Clone, Copy, Debug)]
struct Strip {
    px: f32,
    py: f32,
    dx: f32,
    dy: f32,
    width: f32,
}

impl Strip {
    /// (along, across) coordinates of a point relative to the strip's centre line.
    fn coords(&self, x: f32, y: f32) -> (f32, f32) {
        let (rx, ry) = (x - self.px, y - self.py);
        (rx * self.dx + ry * self.dy, -rx * self.dy + ry * self.dx)
    }
}

/// A rotated rectangle (apron, yard, pier).
#[derive(Clone, Copy, Debug)]
struct RotRect {
    cx: f32,
    cy: f32,
    hx: f32,
    hy: f32,
    angle: f32,
}

impl RotRect {
    fn local(&self, x: f32, y: f32) -> (f32, f32) {
        let (s, c) = self.angle.sin_cos();
        let (dx, dy) = (x - self.cx, y - self.cy);
        (c * dx + s * dy, -s * dx + c * dy)
    }
    fn contains(&self, x: f32, y: f32) -> bool {
        let (u, v) = self.local(x, y);
        u.abs() <= self.hx && v.abs() <= self.hy
    }
}

#[derive(Clone, Copy, Debug)]
enum Water {
    /// Sea on one side: land where `dot(p - centre, normal)` exceeds a wavy shore line.
    Coast { normal: (f32, f32), offset: f32, amp: f32, seed: u64 },
    /// A meandering river band.
    River { horizontal: bool, base: f32, amp: f32, period: f32, phase: f32, width: f32 },
}

struct Layout {
    kind: SceneKind,
    size: f32,
    grid_angle: f32,
    water: Option<Water>,
    quay: f32,
    piers: Vec<RotRect>,
    roads: Vec<Strip>,
    runway: Option<Strip>,
    aprons: Vec<RotRect>,
    yards: Vec<RotRect>,
    /// Urban block grid spacing (0 = no blocks).
    block: f32,
    /// Field patchwork cell size (0 = no fields).
    field: f32,
    tree_level: f32,
    seed: u64,
}

impl Layout {
    fn random(kind: SceneKind, size: usize, scale: f32, rng: &mut SynthRng) -> Layout {
        let s = size as f32;
        let grid_angle = if rng.chance(0.5) { 0.0 } else { rng.range(-0.5, 0.5) };
        let (ga_s, ga_c) = grid_angle.sin_cos();
        let mut l = Layout {
            kind,
            size: s,
            grid_angle,
            water: None,
            quay: 0.0,
            piers: Vec::new(),
            roads: Vec::new(),
            runway: None,
            aprons: Vec::new(),
            yards: Vec::new(),
            block: 0.0,
            field: 0.0,
            tree_level: rng.range(0.62, 0.75),
            seed: rng.next_u64(),
        };
        let c = 0.5 * s;
        // A road through a random point, along the grid or across it.
        let road = |rng: &mut SynthRng, w0: f32, w1: f32| {
            let across = rng.chance(0.5);
            let width = rng.range(w0, w1);
            let (dx, dy) = if across { (-ga_s, ga_c) } else { (ga_c, ga_s) };
            Strip { px: rng.range(0.15, 0.85) * s, py: rng.range(0.15, 0.85) * s, dx, dy, width: width * scale }
        };
        match kind {
            SceneKind::Harbour => {
                let a = (rng.below(0, 4) as f32) * FRAC_PI_2 + rng.range(-0.3, 0.3);
                let normal = (a.cos(), a.sin());
                let offset = rng.range(-0.2, 0.05) * s;
                l.water = Some(Water::Coast { normal, offset, amp: rng.range(2.0, 10.0) * scale, seed: rng.next_u64() });
                l.quay = rng.range(8.0, 16.0) * scale;
                let tangent = (-normal.1, normal.0);
                for _ in 0..rng.below(0, 3) {
                    let t = rng.range(-0.35, 0.35) * s;
                    let len = rng.range(30.0, 60.0) * scale;
                    let base = (c + normal.0 * offset + tangent.0 * t, c + normal.1 * offset + tangent.1 * t);
                    l.piers.push(RotRect {
                        cx: base.0 - normal.0 * 0.5 * len,
                        cy: base.1 - normal.1 * 0.5 * len,
                        hx: 0.5 * len,
                        hy: rng.range(3.0, 6.0) * scale,
                        angle: a,
                    });
                }
                let d = offset + l.quay + rng.range(12.0, 40.0) * scale;
                l.roads.push(Strip {
                    px: c + normal.0 * d,
                    py: c + normal.1 * d,
                    dx: tangent.0,
                    dy: tangent.1,
                    width: rng.range(7.0, 10.0) * scale,
                });
                for _ in 0..rng.below(1, 3) {
                    let (u, v) = (rng.range(-0.4, 0.4) * s, d + rng.range(20.0, 70.0) * scale);
                    l.yards.push(RotRect {
                        cx: c + normal.0 * v + tangent.0 * u,
                        cy: c + normal.1 * v + tangent.1 * u,
                        hx: rng.range(25.0, 60.0) * scale,
                        hy: rng.range(20.0, 40.0) * scale,
                        angle: a,
                    });
                }
            }
            SceneKind::Airport => {
                l.aprons.push(RotRect {
                    cx: rng.range(0.4, 0.6) * s,
                    cy: rng.range(0.4, 0.6) * s,
                    hx: rng.range(0.3, 0.45) * s,
                    hy: rng.range(0.25, 0.4) * s,
                    angle: grid_angle,
                });
                let mut rw = road(rng, 18.0, 26.0);
                let edge = if rng.chance(0.5) { 0.08 } else { 0.92 };
                rw.px = edge * s;
                rw.py = edge * s;
                l.runway = Some(rw);
                if rng.chance(0.6) {
                    l.roads.push(road(rng, 7.0, 9.0));
                }
            }
            SceneKind::Urban => {
                l.block = rng.range(64.0, 100.0) * scale;
                l.tree_level = rng.range(0.6, 0.7);
                let off = (rng.range(0.0, l.block), rng.range(0.0, l.block));
                let w = rng.range(7.0, 10.0);
                let n = (s / l.block).ceil() as i32 + 2;
                for k in -n..=n {
                    // Roads on the block grid lines (in grid coordinates around the centre).
                    let t = k as f32 * l.block;
                    l.roads.push(Strip { px: c + ga_c * (t + off.0), py: c + ga_s * (t + off.0), dx: -ga_s, dy: ga_c, width: w * scale });
                    l.roads.push(Strip { px: c - ga_s * (t + off.1), py: c + ga_c * (t + off.1), dx: ga_c, dy: ga_s, width: w * scale });
                }
            }
            SceneKind::Rural => {
                l.field = rng.range(40.0, 90.0) * scale;
                l.roads.push(road(rng, 6.0, 9.0));
                if rng.chance(0.3) {
                    l.roads.push(road(rng, 6.0, 8.0));
                }
                if rng.chance(0.5) {
                    l.water = Some(Water::River {
                        horizontal: rng.chance(0.5),
                        base: rng.range(0.3, 0.7) * s,
                        amp: rng.range(5.0, 25.0) * scale,
                        period: rng.range(180.0, 400.0) * scale,
                        phase: rng.range(0.0, TAU),
                        width: rng.range(26.0, 44.0) * scale,
                    });
                }
            }
            SceneKind::Industrial => {
                l.tree_level = rng.range(0.7, 0.8);
                for _ in 0..rng.below(1, 3) {
                    l.roads.push(road(rng, 7.0, 10.0));
                }
                for _ in 0..rng.below(2, 4) {
                    l.yards.push(RotRect {
                        cx: rng.range(0.2, 0.8) * s,
                        cy: rng.range(0.2, 0.8) * s,
                        hx: rng.range(30.0, 70.0) * scale,
                        hy: rng.range(25.0, 55.0) * scale,
                        angle: grid_angle,
                    });
                }
            }
        }
        l
    }

    /// Relative frequency of each category (order of [`Category::ALL`]).
    fn category_weights(&self) -> [f32; 6] {
        let river = matches!(self.water, Some(Water::River { .. }));
        // airplane, ship, vehicle, storage tank, building, tennis court
        match self.kind {
            SceneKind::Harbour => [0.0, 4.0, 2.0, 1.5, 2.0, 0.3],
            SceneKind::Airport => [4.0, 0.0, 3.0, 1.0, 1.5, 0.0],
            SceneKind::Urban => [0.0, 0.0, 3.0, 0.7, 4.0, 1.5],
            SceneKind::Rural => [0.3, if river { 2.5 } else { 0.0 }, 2.0, 1.5, 2.5, 1.0],
            SceneKind::Industrial => [0.0, 0.0, 2.5, 4.0, 2.0, 0.0],
        }
    }

    /// Signed distance-like value to the water edge: negative in water.
    fn water_distance(&self, x: f32, y: f32) -> f32 {
        match self.water {
            None => f32::INFINITY,
            Some(Water::Coast { normal, offset, amp, seed }) => {
                let c = 0.5 * self.size;
                let (rx, ry) = (x - c, y - c);
                let along = -rx * normal.1 + ry * normal.0;
                let shore = offset + amp * (2.0 * fbm(along * 0.02, 0.5, seed, 3) - 1.0);
                rx * normal.0 + ry * normal.1 - shore
            }
            Some(Water::River { horizontal, base, amp, period, phase, width }) => {
                let (u, v) = if horizontal { (x, y) } else { (y, x) };
                let centre = base + amp * (TAU * u / period + phase).sin();
                // Distance across the band, corrected for the local slope of the centre line.
                let slope = amp * TAU / period * (TAU * u / period + phase).cos();
                (v - centre).abs() / (1.0 + slope * slope).sqrt() - 0.5 * width
            }
        }
    }

    /// Direction of the river or shore at a point (for ship headings).
    fn water_heading(&self, x: f32, _y: f32) -> Option<f32> {
        match self.water {
            Some(Water::River { horizontal, amp, period, phase, .. }) => {
                let u = if horizontal { x } else { _y };
                let slope = amp * TAU / period * (TAU * u / period + phase).cos();
                let a = slope.atan();
                Some(if horizontal { a } else { FRAC_PI_2 - a })
            }
            Some(Water::Coast { normal, .. }) => Some(normal.1.atan2(normal.0) + FRAC_PI_2),
            None => None,
        }
    }

    fn material(&self, x: f32, y: f32) -> Material {
        let wd = self.water_distance(x, y);
        let coast = matches!(self.water, Some(Water::Coast { .. }));
        if self.piers.iter().any(|p| p.contains(x, y)) {
            return Material::Concrete;
        }
        let on_road = self.roads.iter().any(|r| r.coords(x, y).1.abs() <= 0.5 * r.width);
        // Roads cross rivers on bridges; at the coast they stop at the shore.
        if wd < 0.0 && (coast || !on_road) {
            return Material::Water;
        }
        if on_road || self.runway.is_some_and(|r| r.coords(x, y).1.abs() <= 0.5 * r.width) {
            return Material::Road;
        }
        if self.aprons.iter().any(|a| a.contains(x, y)) {
            return Material::Tarmac;
        }
        if coast && wd < self.quay {
            return Material::Concrete;
        }
        if self.yards.iter().any(|a| a.contains(x, y)) {
            return Material::Concrete;
        }
        if self.block > 0.0 && self.roads.iter().any(|r| r.coords(x, y).1.abs() <= 0.5 * r.width + 2.5) {
            return Material::Concrete; // pavement along urban streets
        }
        if self.block > 0.0 {
            // Each urban block is paved or a lawn, by a hash of its grid cell.
            let (u, v) = self.grid(x, y);
            let cell = ((u / self.block).floor() as i32, (v / self.block).floor() as i32);
            if hash2(cell.0, cell.1, self.seed ^ 0xb10c) < 0.6 {
                return Material::Concrete;
            }
        }
        if fbm(x * 0.03, y * 0.03, self.seed ^ 0x7ee5, 4) > self.tree_level && wd > 3.0 {
            return Material::Trees;
        }
        if self.field > 0.0 {
            return Material::Field;
        }
        if self.kind == SceneKind::Industrial && fbm(x * 0.02, y * 0.02, self.seed ^ 0x5011, 3) > 0.45 {
            return Material::Soil;
        }
        Material::Grass
    }

    fn tree_at(&self, x: f32, y: f32) -> bool {
        self.material(x, y) == Material::Trees
    }

    /// Coordinates along the grid axes, relative to the image centre.
    fn grid(&self, x: f32, y: f32) -> (f32, f32) {
        let (s, c) = self.grid_angle.sin_cos();
        let (dx, dy) = (x - 0.5 * self.size, y - 0.5 * self.size);
        (c * dx + s * dy, -s * dx + c * dy)
    }

    /// Materials and ground colours of every pixel.
    fn paint(&self, size: usize, seed: u64, sun: (f32, f32)) -> (Vec<Material>, Vec<[f32; 3]>) {
        let mut mats = Vec::with_capacity(size * size);
        let mut rgb = Vec::with_capacity(size * size);
        // Field palette: ripe grain, young crop, ploughed soil, stubble, pasture.
        const FIELDS: [[f32; 3]; 5] =
            [[176.0, 160.0, 104.0], [112.0, 134.0, 70.0], [128.0, 104.0, 78.0], [184.0, 172.0, 128.0], [96.0, 122.0, 62.0]];
        for yi in 0..size {
            for xi in 0..size {
                let (x, y) = (xi as f32 + 0.5, yi as f32 + 0.5);
                let m = self.material(x, y);
                let fine = hash2(xi as i32, yi as i32, seed);
                let lo = fbm(x * 0.015, y * 0.015, seed ^ 1, 3);
                let mid = fbm(x * 0.08, y * 0.08, seed ^ 2, 3);
                // Stains, wear and moisture: broad brightness changes on every surface.
                let broad = 0.9 + 0.2 * fbm(x * 0.04, y * 0.04, seed ^ 4, 3);
                let col = match m {
                    Material::Grass => {
                        let dry = fbm(x * 0.025, y * 0.025, seed ^ 5, 3);
                        let a = lerp3([78.0, 104.0, 52.0], [128.0, 132.0, 80.0], lo);
                        let a = lerp3(a, [146.0, 138.0, 96.0], ((dry - 0.55) * 3.0).clamp(0.0, 0.6));
                        mul(a, (0.86 + 0.24 * mid + 0.08 * fine) * broad)
                    }
                    Material::Trees => {
                        // Crowns: bright tops, dark gaps between them, the side away from the sun
                        // darker (the canopy is a height field: compare with a point sunwards).
                        let crown = fbm(x * 0.35, y * 0.35, seed ^ 3, 2);
                        let up = fbm((x + 1.5 * sun.0) * 0.35, (y + 1.5 * sun.1) * 0.35, seed ^ 3, 2);
                        let lit = (1.0 + 2.5 * (crown - up)).clamp(0.6, 1.3);
                        mul([46.0, 66.0, 38.0], (0.55 + 0.8 * crown + 0.1 * fine) * lit)
                    }
                    Material::Field => {
                        let (u, v) = self.grid(x, y);
                        let cell = ((u / self.field).floor() as i32, (v / (0.7 * self.field)).floor() as i32);
                        let h = hash2(cell.0, cell.1, self.seed ^ 0xf1e1);
                        let base = FIELDS[(h * 5.0) as usize % 5];
                        // Plough or crop rows, along or across the grid by field.
                        let along = if hash2(cell.1, cell.0, self.seed) < 0.5 { u } else { v };
                        let rows = 1.0 + 0.07 * (along * TAU / 3.5).sin();
                        let (fu, fv) = ((u / self.field).fract().abs(), (v / (0.7 * self.field)).fract().abs());
                        let border = fu.min(1.0 - fu) * self.field < 1.0 || fv.min(1.0 - fv) * 0.7 * self.field < 1.0;
                        let c = mul(base, rows * (0.9 + 0.15 * mid + 0.05 * fine));
                        if border {
                            mul(c, 0.75)
                        } else {
                            c
                        }
                    }
                    Material::Soil => {
                        let tone = lerp3([150.0, 130.0, 102.0], [118.0, 104.0, 86.0], lo);
                        mul(tone, (0.8 + 0.35 * mid + 0.08 * fine) * broad)
                    }
                    Material::Water => {
                        let d = self.water_distance(x, y);
                        let deep = lerp3([36.0, 58.0, 68.0], [48.0, 74.0, 82.0], lo);
                        let shore = [84.0, 104.0, 96.0];
                        let t = (1.0 + d / 5.0).clamp(0.0, 1.0); // d in (-5, 0]: turbid margin
                        let c = lerp3(deep, shore, t * 0.7);
                        mul(c, 0.96 + 0.06 * mid + 0.03 * fine)
                    }
                    Material::Road => self.road_colour(x, y, fine),
                    Material::Concrete => {
                        let (u, v) = self.grid(x, y);
                        let joint = (u.rem_euclid(14.0) < 0.8) || (v.rem_euclid(14.0) < 0.8);
                        // Yards and car parks: stall lines on some blocks.
                        let paved_block = self.block > 0.0 && {
                            let cell = ((u / self.block).floor() as i32, (v / self.block).floor() as i32);
                            hash2(cell.1, cell.0, self.seed ^ 0xca2) < 0.4
                        };
                        let stall = (paved_block || self.yards.iter().any(|a| a.contains(x, y)))
                            && hash2((u / 60.0).floor() as i32, (v / 60.0).floor() as i32, self.seed ^ 0x9a) < 0.5
                            && u.rem_euclid(5.0) < 0.6
                            && v.rem_euclid(24.0) > 4.0;
                        if stall {
                            [200.0, 200.0, 192.0]
                        } else {
                            mul([170.0, 167.0, 158.0], (0.88 + 0.14 * mid + 0.06 * fine) * broad * if joint { 0.92 } else { 1.0 })
                        }
                    }
                    Material::Tarmac => {
                        let (u, v) = self.grid(x, y);
                        let joint = (u.rem_euclid(18.0) < 0.7) || (v.rem_euclid(18.0) < 0.7);
                        let taxi = (v.rem_euclid(70.0) - 35.0).abs() < 0.6;
                        if taxi {
                            [196.0, 170.0, 72.0]
                        } else {
                            mul([152.0, 152.0, 147.0], (0.92 + 0.1 * lo + 0.05 * fine) * broad * if joint { 0.9 } else { 1.0 })
                        }
                    }
                };
                // Tree shadows fall on the ground beside the trees, away from the sun.
                let col = if m != Material::Trees && m != Material::Water && self.tree_at(x + 3.0 * sun.0, y + 3.0 * sun.1) {
                    mul(col, 0.62)
                } else {
                    col
                };
                mats.push(m);
                rgb.push(col);
            }
        }
        (mats, rgb)
    }

    fn road_colour(&self, x: f32, y: f32, fine: f32) -> [f32; 3] {
        let on = |r: &Strip| r.coords(x, y).1.abs() <= 0.5 * r.width;
        if let Some(rw) = self.runway.filter(|r| on(r)) {
            let (along, across) = rw.coords(x, y);
            let centre = across.abs() < 0.6 && along.rem_euclid(16.0) < 8.0;
            let edge = 0.5 * rw.width - across.abs() < 1.0;
            if centre || edge {
                return [220.0, 220.0, 214.0];
            }
            return mul([78.0, 80.0, 82.0], 0.95 + 0.08 * fine);
        }
        let r = self.roads.iter().find(|r| on(r)).copied().unwrap();
        let (along, across) = r.coords(x, y);
        let wide = r.width >= 8.0;
        if wide && across.abs() < 0.45 && along.rem_euclid(10.0) < 5.0 {
            return [210.0, 208.0, 196.0];
        }
        let kerb = 0.5 * r.width - across.abs() < 0.8;
        mul([94.0, 96.0, 100.0], (0.94 + 0.1 * fine) * if kerb { 1.25 } else { 1.0 })
    }
}

// ---------------------------------------------------------------------------------------------
// Placement and drawing

/// Free margin around every object and shadow, in pixels.
const MARGIN: i32 = 3;

/// Materials each category may stand on, and the share of its footprint that may be elsewhere.
fn allowed(category: Category, m: Material) -> bool {
    use Material::*;
    match category {
        Category::Ship => m == Water,
        Category::Airplane => matches!(m, Tarmac | Concrete | Grass | Soil),
        Category::Vehicle => matches!(m, Road | Concrete | Tarmac),
        Category::StorageTank => matches!(m, Concrete | Soil | Grass | Tarmac | Field),
        Category::Building => matches!(m, Concrete | Grass | Soil | Field),
        Category::TennisCourt => matches!(m, Grass | Concrete | Soil | Field),
    }
}

/// Pixels whose centre lies in `spec` (`dx`, `dy` shift the shape: shadows).
fn footprint(spec: &ObjectSpec, size: usize, dx: f32, dy: f32) -> Vec<(i32, i32)> {
    let r = spec.shape.radius() + 1.0;
    let (x0, x1) = ((spec.cx + dx - r).floor() as i32, (spec.cx + dx + r).ceil() as i32);
    let (y0, y1) = ((spec.cy + dy - r).floor() as i32, (spec.cy + dy + r).ceil() as i32);
    let mut out = Vec::new();
    for y in y0.max(0)..=y1.min(size as i32 - 1) {
        for x in x0.max(0)..=x1.min(size as i32 - 1) {
            if spec.sample(x as f32 + 0.5 - dx, y as f32 + 0.5 - dy, (1.0, 0.0)).is_some() {
                out.push((x, y));
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn place(
    layout: &Layout,
    materials: &[Material],
    occupied: &mut [bool],
    size: usize,
    category: Category,
    colour: Colour,
    shape: Shape,
    base: [f32; 3],
    sun: (f32, f32),
    rng: &mut SynthRng,
) -> Option<ObjectSpec> {
    let s = size as f32;
    let r = shape.radius();
    let sh = shadow_height(&shape);
    let (sdx, sdy) = (-sun.0 * sh, -sun.1 * sh);
    for _ in 0..150 {
        let (mut cx, mut cy) = (rng.range(r + 1.0, s - r - 1.0), rng.range(r + 1.0, s - r - 1.0));
        let mut heading = rng.range(0.0, TAU);
        match category {
            Category::Vehicle if !layout.roads.is_empty() && rng.chance(0.75) => {
                // On a road, along it, in one of the two lanes.
                let road = *rng.pick(&layout.roads);
                let along = rng.range(-s, s);
                let lane = (if rng.chance(0.5) { 0.25 } else { -0.25 }) * road.width;
                cx = road.px + road.dx * along - road.dy * lane;
                cy = road.py + road.dy * along + road.dx * lane;
                heading = road.dy.atan2(road.dx) + if lane > 0.0 { 0.0 } else { PI };
            }
            Category::Vehicle | Category::Building | Category::TennisCourt => {
                heading = layout.grid_angle + (rng.below(0, 4) as f32) * FRAC_PI_2 + rng.range(-0.05, 0.05);
            }
            Category::Ship => {
                if let Some(h) = layout.water_heading(cx, cy) {
                    if rng.chance(0.7) {
                        heading = h + if rng.chance(0.5) { 0.0 } else { PI } + rng.range(-0.15, 0.15);
                    }
                }
            }
            Category::StorageTank => heading = 0.0,
            Category::Airplane => {}
        }
        if cx < r + 1.0 || cy < r + 1.0 || cx > s - r - 1.0 || cy > s - r - 1.0 {
            continue;
        }
        let spec = ObjectSpec { category, colour, shape: shape.clone(), base, heading, cx, cy };
        let body = footprint(&spec, size, 0.0, 0.0);
        let bad = body.iter().filter(|&&(x, y)| !allowed(category, materials[y as usize * size + x as usize])).count();
        // Ships must float entirely; land objects tolerate a sliver of other ground, never water.
        let water = body.iter().any(|&(x, y)| materials[y as usize * size + x as usize] == Material::Water);
        if bad > if category == Category::Ship { 0 } else { body.len() / 20 } || (category != Category::Ship && water) {
            continue;
        }
        let shadow = if sh > 0.0 { footprint(&spec, size, sdx, sdy) } else { Vec::new() };
        if body.iter().chain(&shadow).any(|&(x, y)| occupied[y as usize * size + x as usize]) {
            continue;
        }
        for &(x, y) in body.iter().chain(&shadow) {
            for yy in (y - MARGIN).max(0)..=(y + MARGIN).min(size as i32 - 1) {
                for xx in (x - MARGIN).max(0)..=(x + MARGIN).min(size as i32 - 1) {
                    occupied[yy as usize * size + xx as usize] = true;
                }
            }
        }
        return Some(spec);
    }
    None
}

/// Sub-pixel sample offsets (2×2 grid) for anti-aliased edges.
const SUB: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];

fn pixel_box(spec: &ObjectSpec, size: usize, pad: f32) -> (usize, usize, usize, usize) {
    let r = spec.shape.radius() + pad + 1.0;
    let clamp = |v: f32| (v.max(0.0) as usize).min(size - 1);
    (clamp(spec.cx - r), clamp(spec.cx + r), clamp(spec.cy - r), clamp(spec.cy + r))
}

fn draw_shadow(rgb: &mut [[f32; 3]], size: usize, spec: &ObjectSpec, sun: (f32, f32)) {
    let sh = shadow_height(&spec.shape);
    if sh <= 0.0 {
        return;
    }
    let (dx, dy) = (-sun.0 * sh, -sun.1 * sh);
    let (x0, x1, y0, y1) = pixel_box(spec, size, sh);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let mut n = 0;
            for (ox, oy) in SUB {
                let (px, py) = (x as f32 + ox, y as f32 + oy);
                if spec.sample(px - dx, py - dy, sun).is_some() && spec.sample(px, py, sun).is_none() {
                    n += 1;
                }
            }
            if n > 0 {
                let f = 1.0 - 0.5 * n as f32 / 4.0;
                rgb[y * size + x] = mul(rgb[y * size + x], f);
            }
        }
    }
}

fn draw_wake(rgb: &mut [[f32; 3]], materials: &[Material], size: usize, spec: &ObjectSpec, length: f32, beam: f32) {
    let (s, c) = spec.heading.sin_cos();
    let (x0, x1, y0, y1) = pixel_box(spec, size, length);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if materials[y * size + x] != Material::Water {
                continue;
            }
            let (dx, dy) = (x as f32 + 0.5 - spec.cx, y as f32 + 0.5 - spec.cy);
            let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
            let behind = -0.5 * length - u; // distance behind the stern
            if behind < 0.0 || behind > length {
                continue;
            }
            let half = 0.4 * beam + 0.25 * behind;
            if v.abs() > half {
                continue;
            }
            let a = 0.45 * (1.0 - behind / length) * (1.0 - (v.abs() / half).powi(2));
            rgb[y * size + x] = lerp3(rgb[y * size + x], [200.0, 212.0, 212.0], a);
        }
    }
}

/// Draw the object anti-aliased and return its mask: pixels at least half covered.
fn draw_object(rgb: &mut [[f32; 3]], size: usize, spec: &ObjectSpec, sun: (f32, f32)) -> Vec<u8> {
    let mut mask = vec![0u8; size * size];
    let (x0, x1, y0, y1) = pixel_box(spec, size, 0.0);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let mut acc = [0.0f32; 3];
            let mut n = 0;
            for (ox, oy) in SUB {
                if let Some(c) = spec.sample(x as f32 + ox, y as f32 + oy, sun) {
                    acc = [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]];
                    n += 1;
                }
            }
            if n == 0 {
                continue;
            }
            let mean = mul(acc, 1.0 / n as f32);
            rgb[y * size + x] = lerp3(rgb[y * size + x], mean, n as f32 / 4.0);
            if n >= 2 {
                mask[y * size + x] = 1;
            }
        }
    }
    mask
}

fn measure(spec: ObjectSpec, mask: Vec<u8>, size: usize) -> SceneObject {
    let (mut area, mut sx, mut sy) = (0usize, 0f64, 0f64);
    let mut bbox = [f32::MAX, f32::MAX, 0.0f32, 0.0f32];
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m != 0) {
        let (x, y) = ((i % size) as f32, (i / size) as f32);
        area += 1;
        sx += x as f64 + 0.5;
        sy += y as f64 + 0.5;
        bbox = [bbox[0].min(x), bbox[1].min(y), bbox[2].max(x + 1.0), bbox[3].max(y + 1.0)];
    }
    let centroid = ((sx / area.max(1) as f64) as f32, (sy / area.max(1) as f64) as f32);
    SceneObject { category: spec.category, colour: spec.colour, mask, area, bbox, centroid, spec }
}

/// Camera look: a little blur, a brightness gradient, a colour cast and sensor noise; then bytes.
fn finish(rgb: &[[f32; 3]], size: usize, rng: &mut SynthRng) -> Vec<u8> {
    let blur = |img: &[[f32; 3]], horizontal: bool| -> Vec<[f32; 3]> {
        let mut out = img.to_vec();
        for y in 0..size {
            for x in 0..size {
                let (a, b) = if horizontal {
                    (y * size + x.saturating_sub(1), y * size + (x + 1).min(size - 1))
                } else {
                    (y.saturating_sub(1) * size + x, (y + 1).min(size - 1) * size + x)
                };
                let c = img[y * size + x];
                // [1, 6, 1] / 8: softens aliasing like optics do, keeps edges sharp.
                out[y * size + x] = std::array::from_fn(|k| (img[a][k] + 6.0 * c[k] + img[b][k]) / 8.0);
            }
        }
        out
    };
    let img = blur(&blur(rgb, true), false);
    let cast = [rng.range(0.96, 1.04), rng.range(0.97, 1.03), rng.range(0.95, 1.05)];
    let (ga, gb) = (rng.range(-0.06, 0.06), rng.range(-0.06, 0.06));
    let gain = rng.range(0.92, 1.08);
    let seed = rng.next_u64();
    let mut out = Vec::with_capacity(size * size * 3);
    for (i, c) in img.iter().enumerate() {
        let (x, y) = ((i % size) as f32 / size as f32 - 0.5, (i / size) as f32 / size as f32 - 0.5);
        let light = gain * (1.0 + ga * x + gb * y);
        for k in 0..3 {
            let noise = (hash2(i as i32, k as i32, seed) - 0.5) * 6.0;
            out.push((c[k] * cast[k] * light + noise).round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Noise and colour helpers

/// Uniform hash of a lattice point in `[0, 1)` (SplitMix64 finaliser).
fn hash2(ix: i32, iy: i32, seed: u64) -> f32 {
    let mut z = seed
        ^ (ix as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (iy as u32 as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// Value noise: lattice hashes blended with a smoothstep.
fn value_noise(x: f32, y: f32, seed: u64) -> f32 {
    let (xf, yf) = (x.floor(), y.floor());
    let (ix, iy) = (xf as i32, yf as i32);
    let (tx, ty) = (x - xf, y - yf);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = hash2(ix, iy, seed) + sx * (hash2(ix + 1, iy, seed) - hash2(ix, iy, seed));
    let b = hash2(ix, iy + 1, seed) + sx * (hash2(ix + 1, iy + 1, seed) - hash2(ix, iy + 1, seed));
    a + sy * (b - a)
}

/// Fractal sum of `octaves` value noises, in `[0, 1]`.
fn fbm(x: f32, y: f32, seed: u64, octaves: u32) -> f32 {
    let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
    for o in 0..octaves {
        sum += amp * value_noise(x * f, y * f, seed.wrapping_add(o as u64 * 0x51));
        norm += amp;
        amp *= 0.5;
        f *= 2.0;
    }
    sum / norm
}

fn mul(c: [f32; 3], f: f32) -> [f32; 3] {
    [c[0] * f, c[1] * f, c[2] * f]
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}
