//! Object categories, colour names, sizes and top-down shapes.
//!
//! Every shape is a function from a point in the object's own frame (x along the heading, y across,
//! origin at the centre, pixels) to the colour drawn there, or `None` outside. The rasteriser
//! ([`super::scene`]) samples it on a sub-pixel grid, so the pixels and the mask come from the same
//! test and the mask is exact by construction.

use super::SynthRng;

/// The object categories of the benchmark (DIOR / RRSIS-D names where they exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Airplane,
    Ship,
    Vehicle,
    StorageTank,
    Building,
    TennisCourt,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Airplane,
        Category::Ship,
        Category::Vehicle,
        Category::StorageTank,
        Category::Building,
        Category::TennisCourt,
    ];

    /// The name used in sentences and in the `category_name` field.
    pub fn name(self) -> &'static str {
        match self {
            Category::Airplane => "airplane",
            Category::Ship => "ship",
            Category::Vehicle => "vehicle",
            Category::StorageTank => "storage tank",
            Category::Building => "building",
            Category::TennisCourt => "tennis court",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Category::Airplane => "airplanes",
            Category::Ship => "ships",
            Category::Vehicle => "vehicles",
            Category::StorageTank => "storage tanks",
            Category::Building => "buildings",
            Category::TennisCourt => "tennis courts",
        }
    }

    /// Colours this category is painted in, with their frequencies.
    pub fn colours(self) -> &'static [(Colour, f32)] {
        match self {
            Category::Airplane => &[(Colour::White, 0.7), (Colour::Grey, 0.3)],
            Category::Ship => &[(Colour::White, 0.4), (Colour::Grey, 0.25), (Colour::Red, 0.2), (Colour::Blue, 0.15)],
            Category::Vehicle => &[
                (Colour::White, 0.35),
                (Colour::Grey, 0.2),
                (Colour::Red, 0.15),
                (Colour::Blue, 0.15),
                (Colour::Yellow, 0.1),
                (Colour::Green, 0.05),
            ],
            Category::StorageTank => &[(Colour::White, 0.65), (Colour::Grey, 0.35)],
            Category::Building => &[(Colour::Grey, 0.4), (Colour::Red, 0.3), (Colour::White, 0.2), (Colour::Blue, 0.1)],
            Category::TennisCourt => &[(Colour::Green, 0.45), (Colour::Blue, 0.35), (Colour::Red, 0.2)],
        }
    }
}

/// Colour names. Each object is drawn from its colour's RGB (jittered a little and lit), so the
/// name in a sentence always matches what is visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    White,
    Grey,
    Red,
    Blue,
    Green,
    Yellow,
}

impl Colour {
    pub const ALL: [Colour; 6] = [Colour::White, Colour::Grey, Colour::Red, Colour::Blue, Colour::Green, Colour::Yellow];

    pub fn name(self) -> &'static str {
        match self {
            Colour::White => "white",
            Colour::Grey => "grey",
            Colour::Red => "red",
            Colour::Blue => "blue",
            Colour::Green => "green",
            Colour::Yellow => "yellow",
        }
    }

    /// Base RGB (0–255) before jitter and shading; muted the way paint looks from orbit.
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Colour::White => [232.0, 232.0, 226.0],
            Colour::Grey => [128.0, 131.0, 136.0],
            Colour::Red => [178.0, 52.0, 44.0],
            Colour::Blue => [48.0, 84.0, 160.0],
            Colour::Green => [58.0, 126.0, 66.0],
            Colour::Yellow => [226.0, 192.0, 52.0],
        }
    }
}

/// Top-down geometry of one object, in pixels, in the object's own frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// Fuselage along x, swept wings, tailplane and engines.
    Airplane { length: f32, span: f32 },
    /// Hull with a pointed bow at +x, a superstructure near the stern and, on long ships, hatches.
    Ship { length: f32, beam: f32, cabin: [f32; 3] },
    /// Car (windscreens) or truck (cab + trailer).
    Vehicle { length: f32, width: f32, truck: bool },
    /// Cylinder seen from above; floating-roof tanks show an inner ring.
    Tank { radius: f32, floating: bool },
    /// Rectangular or L-shaped footprint with a pitched (ridge along the long side) or flat roof.
    Building { length: f32, width: f32, pitched: bool, wing: Option<(f32, f32)>, vents: Vec<(f32, f32, f32)> },
    /// Playing surface with white lines inside a darker run-off apron of the same colour.
    TennisCourt { length: f32, width: f32 },
}

/// Sun direction in the object frame, for shading (unit vector pointing towards the sun).
pub type Light = (f32, f32);

impl Shape {
    /// Radius of a circle around the origin that contains the shape.
    pub fn radius(&self) -> f32 {
        match self {
            Shape::Airplane { length, span } => 0.5 * length.max(*span) * 1.05,
            Shape::Ship { length, .. } => 0.5 * length * 1.02,
            Shape::Vehicle { length, width, .. } => 0.5 * length.hypot(*width),
            Shape::Tank { radius, .. } => *radius,
            Shape::Building { length, width, wing, .. } => {
                let extra = wing.map_or(0.0, |(_, ww)| ww);
                (0.5 * length).hypot(0.5 * width + extra)
            }
            Shape::TennisCourt { length, width } => 0.5 * length.hypot(*width),
        }
    }

    /// Colour at `(x, y)` in the object frame, `None` outside the object.
    pub fn sample(&self, x: f32, y: f32, base: [f32; 3], light: Light) -> Option<[f32; 3]> {
        let scaled = |f: f32| Some([base[0] * f, base[1] * f, base[2] * f]);
        match *self {
            Shape::Airplane { length: l, span } => {
                let (h, ay) = (0.5 * l, y.abs());
                // Fuselage: rounded nose, tapering tail, brighter along the top (a cylinder).
                let fw = 0.065 * l;
                let w = if x > 0.3 * l {
                    let t = (x - 0.3 * l) / (h - 0.3 * l);
                    fw * (1.0 - t * t).max(0.0).sqrt()
                } else if x < -0.25 * l {
                    fw * (0.3 + 0.7 * (x + h) / (h - 0.25 * l))
                } else {
                    fw
                };
                if x.abs() <= h && ay <= w {
                    return scaled(1.04 - 0.18 * (ay / fw).powi(2));
                }
                // Engines hang in front of the wing at a third of the half span.
                let (ey, ex) = (0.32 * 0.5 * span, 0.1 * l - 0.55 * 0.32 * 0.5 * span + 0.04 * l);
                if ((x - ex) / (0.075 * l)).powi(2) + ((ay - ey) / (0.03 * l)).powi(2) <= 1.0 {
                    return scaled(0.62);
                }
                // Main wings, swept back.
                let hs = 0.5 * span;
                let le = 0.1 * l - 0.55 * ay;
                let chord = 0.24 * l * (1.0 - ay / hs) + 0.06 * l * (ay / hs);
                if ay <= hs && x <= le && x >= le - chord {
                    return scaled(0.94);
                }
                // Tailplane.
                let ht = 0.19 * l;
                let le = -0.34 * l - 0.5 * ay;
                let chord = 0.11 * l * (1.0 - ay / ht) + 0.04 * l * (ay / ht);
                if ay <= ht && x <= le && x >= le - chord && x >= -h {
                    return scaled(0.9);
                }
                None
            }
            Shape::Ship { length: l, beam, cabin } => {
                let (h, bw, ay) = (0.5 * l, 0.5 * beam, y.abs());
                let bow = 0.32 * l;
                let w = if x > h - bow {
                    let t = (x - (h - bow)) / bow;
                    bw * (1.0 - t * t).max(0.0).sqrt()
                } else if x < -h + 0.06 * l {
                    // Transom stern, slightly rounded.
                    let t = (-h + 0.06 * l - x) / (0.06 * l);
                    bw * (1.0 - 0.25 * t * t)
                } else {
                    bw
                };
                if x.abs() > h || ay > w {
                    return None;
                }
                if w - ay < 0.9 {
                    return scaled(0.72); // gunwale
                }
                let (c0, c1) = (-h + 0.07 * l, -h + 0.07 * l + 0.24 * l.min(40.0));
                if x >= c0 && x <= c1 && ay <= 0.72 * bw {
                    // Superstructure: a lit and a shaded side.
                    let f = if y * light.1 > 0.0 { 1.05 } else { 0.85 };
                    return Some([cabin[0] * f, cabin[1] * f, cabin[2] * f]);
                }
                if l > 38.0 && x > c1 + 2.0 && x < h - bow && ay <= 0.6 * bw {
                    // Cargo hatches in a row.
                    let pitch = 6.0;
                    let k = ((x - c1 - 2.0) / pitch).fract();
                    if k < 0.75 {
                        return scaled(0.8);
                    }
                }
                scaled(1.0)
            }
            Shape::Vehicle { length: l, width, truck } => {
                let (h, hw) = (0.5 * l, 0.5 * width);
                if x.abs() > h || y.abs() > hw {
                    return None;
                }
                let r = 0.3 * width;
                let (dx, dy) = (x.abs() - (h - r), y.abs() - (hw - r));
                if dx > 0.0 && dy > 0.0 && dx * dx + dy * dy > r * r {
                    return None;
                }
                let edge = if hw - y.abs() < 0.6 { 0.82 } else { 1.0 };
                if truck {
                    // Cab at the front, a gap, then the box trailer.
                    if x > 0.26 * l && x < 0.32 * l {
                        return Some([40.0, 40.0, 42.0]);
                    }
                    if x > 0.4 * l {
                        return Some([50.0, 55.0, 62.0]); // windscreen
                    }
                    return scaled(edge * (if x > 0.3 * l { 0.95 } else { 1.0 }));
                }
                if (x > 0.12 * l && x < 0.3 * l) || (x < -0.26 * l && x > -0.4 * l) {
                    return Some([42.0, 48.0, 58.0]); // windscreens
                }
                scaled(edge)
            }
            Shape::Tank { radius, floating } => {
                let r = x.hypot(y);
                if r > radius {
                    return None;
                }
                if radius - r < 1.1 {
                    return scaled(0.75); // rim
                }
                let lit = 1.0 + 0.14 * (x * light.0 + y * light.1) / radius;
                if floating && (r - 0.82 * radius).abs() < 0.6 {
                    return scaled(0.7 * lit);
                }
                if r < 1.0 {
                    return scaled(0.7);
                }
                scaled(lit * if floating && r < 0.82 * radius { 0.93 } else { 1.0 })
            }
            Shape::Building { length: l, width: wd, pitched, wing, ref vents } => {
                let (h, hw) = (0.5 * l, 0.5 * wd);
                let main = |x: f32, y: f32| x.abs() <= h && y.abs() <= hw;
                let wing_at = |x: f32, y: f32| wing.is_some_and(|(wl, ww)| x >= h - wl && x <= h && y >= hw && y <= hw + ww);
                let in_main = main(x, y);
                if !in_main && !wing_at(x, y) {
                    return None;
                }
                if pitched {
                    // Two roof planes: the one facing the sun is brighter; a light ridge line.
                    let (across, lit_sign) = match wing {
                        Some((wl, _)) if !in_main => (x - (h - 0.5 * wl), light.0),
                        _ => (y, light.1),
                    };
                    if across.abs() < 0.5 {
                        return scaled(1.12);
                    }
                    return scaled(if across * lit_sign > 0.0 { 1.05 } else { 0.78 });
                }
                // Flat roof: a darker parapet along the outline, a few lighter plant boxes.
                let inside = |x: f32, y: f32| main(x, y) || wing_at(x, y);
                if !(inside(x - 1.0, y) && inside(x + 1.0, y) && inside(x, y - 1.0) && inside(x, y + 1.0)) {
                    return scaled(0.8);
                }
                for &(vx, vy, s) in vents {
                    if (x - vx).abs() <= s && (y - vy).abs() <= s {
                        return scaled(1.18);
                    }
                }
                scaled(1.0)
            }
            Shape::TennisCourt { length: l, width: wd } => {
                let (h, hw) = (0.5 * l, 0.5 * wd);
                if x.abs() > h || y.abs() > hw {
                    return None;
                }
                // Court 23.77 × 10.97 m inside a 36.6 × 18.3 m run-off area.
                let (ch, cw) = (0.65 * h, 0.6 * hw);
                let (ax, ay) = (x.abs(), y.abs());
                if ax > ch + 0.5 || ay > cw + 0.5 {
                    return scaled(0.72);
                }
                let line = 0.45;
                let service = 0.54 * ch;
                let on_line = (ax - ch).abs() < line
                    || (ay - cw).abs() < line
                    || ((ay - 0.75 * cw).abs() < line && ax <= ch)
                    || ((ax - service).abs() < line && ay <= 0.75 * cw)
                    || (ay < line && ax <= service);
                if on_line {
                    return Some([235.0, 235.0, 230.0]);
                }
                if x.abs() < 0.4 {
                    return Some([60.0, 60.0, 60.0]); // net
                }
                scaled(1.0)
            }
        }
    }
}

/// Height above ground in pixels, for the shadow offset.
pub fn shadow_height(shape: &Shape) -> f32 {
    match shape {
        Shape::Airplane { length, .. } => 0.08 * length,
        Shape::Ship { length, .. } => 0.04 * length,
        Shape::Vehicle { truck, .. } => {
            if *truck {
                2.0
            } else {
                1.3
            }
        }
        Shape::Tank { radius, .. } => 0.55 * radius,
        Shape::Building { length, width, .. } => 0.12 * length.max(*width) + 2.0,
        Shape::TennisCourt { .. } => 0.0,
    }
}

/// A drawn object before rasterisation: what it is and where it goes.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectSpec {
    pub category: Category,
    pub colour: Colour,
    pub shape: Shape,
    /// Jittered RGB of the named colour (the colour of the lit, unshaded surface).
    pub base: [f32; 3],
    /// Heading of the object's x axis, radians, image axes (x right, y down).
    pub heading: f32,
    pub cx: f32,
    pub cy: f32,
}

impl ObjectSpec {
    /// Colour at image point `(px, py)`, `None` outside the object. `sun` is the world direction
    /// towards the sun.
    pub fn sample(&self, px: f32, py: f32, sun: (f32, f32)) -> Option<[f32; 3]> {
        let (s, c) = self.heading.sin_cos();
        let (dx, dy) = (px - self.cx, py - self.cy);
        // World -> object frame: rotate by -heading.
        let (x, y) = (c * dx + s * dy, -s * dx + c * dy);
        let light = (c * sun.0 + s * sun.1, -s * sun.0 + c * sun.1);
        self.shape.sample(x, y, self.base, light)
    }
}

/// Draw the shape and colour of a new object of `category`; `scale` = image size / 256.
pub fn random_object(category: Category, rng: &mut SynthRng, scale: f32) -> (Colour, Shape, [f32; 3]) {
    let weights: Vec<f32> = category.colours().iter().map(|c| c.1).collect();
    let colour = category.colours()[rng.weighted(&weights)].0;
    let base = jitter(colour.rgb(), rng);
    let s = scale;
    let shape = match category {
        Category::Airplane => {
            let length = rng.range(30.0, 52.0) * s;
            Shape::Airplane { length, span: length * rng.range(0.9, 1.1) }
        }
        Category::Ship => {
            let length = rng.range(22.0, 62.0) * s;
            let cabin = if colour == Colour::White { [200.0, 202.0, 205.0] } else { [236.0, 236.0, 232.0] };
            Shape::Ship { length, beam: length * rng.range(0.17, 0.24), cabin }
        }
        Category::Vehicle => {
            if rng.chance(0.25) {
                let length = rng.range(14.0, 19.0) * s;
                Shape::Vehicle { length, width: rng.range(5.0, 6.0) * s, truck: true }
            } else {
                let length = rng.range(8.0, 11.5) * s;
                Shape::Vehicle { length, width: length * rng.range(0.42, 0.5), truck: false }
            }
        }
        Category::StorageTank => {
            Shape::Tank { radius: rng.range(6.0, 17.0) * s, floating: rng.chance(0.4) }
        }
        Category::Building => {
            let length = rng.range(18.0, 46.0) * s;
            let width = length * rng.range(0.45, 0.9);
            let wing = rng.chance(0.3).then(|| (length * rng.range(0.3, 0.5), width * rng.range(0.4, 0.8)));
            let pitched = rng.chance(0.45);
            let vents = if pitched {
                Vec::new()
            } else {
                (0..rng.below(0, 4))
                    .map(|_| {
                        let v = rng.range(1.0, 2.2) * s;
                        (
                            rng.range(-0.5 * length + v + 2.0, 0.5 * length - v - 2.0),
                            rng.range(-0.5 * width + v + 2.0, 0.5 * width - v - 2.0),
                            v,
                        )
                    })
                    .collect()
            };
            Shape::Building { length, width, pitched, wing, vents }
        }
        Category::TennisCourt => {
            let length = rng.range(30.0, 42.0) * s;
            Shape::TennisCourt { length, width: length * rng.range(0.48, 0.54) }
        }
    };
    (colour, shape, base)
}

/// A few percent of brightness and hue variation, so that two white objects differ a little.
fn jitter(rgb: [f32; 3], rng: &mut SynthRng) -> [f32; 3] {
    let bright = rng.range(0.92, 1.05);
    let mut out = [0.0; 3];
    for (o, v) in out.iter_mut().zip(rgb) {
        *o = (v * bright * rng.range(0.97, 1.03)).min(250.0);
    }
    out
}
