//! Referring expressions: a small grammar, its meaning evaluated against a scene, and the
//! `simple` / `relational` tag.
//!
//! An expression is built as a structure ([`Expr`]), kept only if [`resolve`] says it denotes
//! exactly its target, and then written out in one of a few surface forms. The semantics use
//! the objects' mask facts (centroid, box, area) and are *three-valued*: a spatial predicate is
//! clearly true, clearly false, or in a margin zone around its threshold. An expression is kept
//! only when no object falls in a margin zone, so any reader whose thresholds lie inside the
//! margins (a person, or the independent checker of the tests, which uses the midpoints) picks
//! the same single object.
//!
//! Tags: `simple` expressions name only the target's own properties (category, colour, size rank,
//! place in the image, rank along an axis among its own kind); `relational` ones locate it from
//! another object (left of, right of, above, below, next to, between).

use super::objects::{Category, Colour};
use super::scene::{Scene, SceneObject};
use super::SynthRng;

/// Absolute place in the image; the image is cut in thirds each way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    TopLeft,
    Top,
    TopRight,
    Left,
    Centre,
    Right,
    BottomLeft,
    Bottom,
    BottomRight,
}

impl Region {
    pub const ALL: [Region; 9] = [
        Region::TopLeft,
        Region::Top,
        Region::TopRight,
        Region::Left,
        Region::Centre,
        Region::Right,
        Region::BottomLeft,
        Region::Bottom,
        Region::BottomRight,
    ];

    /// Surface forms, first the plainest.
    pub fn phrases(self) -> &'static [&'static str] {
        match self {
            Region::TopLeft => &["in the top left", "in the upper left", "at the top left"],
            Region::Top => &["at the top"],
            Region::TopRight => &["in the top right", "in the upper right", "at the top right"],
            Region::Left => &["on the left"],
            Region::Centre => &["in the centre", "in the middle"],
            Region::Right => &["on the right"],
            Region::BottomLeft => &["in the bottom left", "in the lower left", "at the bottom left"],
            Region::Bottom => &["at the bottom"],
            Region::BottomRight => &["in the bottom right", "in the lower right", "at the bottom right"],
        }
    }
}

/// Axis and end an ordinal counts from ("the second ship from the left").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Left,
    Right,
    Top,
    Bottom,
}

impl Direction {
    pub const ALL: [Direction; 4] = [Direction::Left, Direction::Right, Direction::Top, Direction::Bottom];

    pub fn word(self) -> &'static str {
        match self {
            Direction::Left => "left",
            Direction::Right => "right",
            Direction::Top => "top",
            Direction::Bottom => "bottom",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Superlative {
    Largest,
    Smallest,
}

/// Spatial relation between the target and an anchor object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
    NextTo,
}

impl Relation {
    pub const ALL: [Relation; 5] = [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below, Relation::NextTo];

    pub fn phrases(self) -> &'static [&'static str] {
        match self {
            Relation::LeftOf => &["left of", "to the left of", "on the left of"],
            Relation::RightOf => &["right of", "to the right of", "on the right of"],
            Relation::Above => &["above"],
            Relation::Below => &["below"],
            Relation::NextTo => &["next to", "beside", "near"],
        }
    }
}

const ORDINALS: [&str; 4] = ["first", "second", "third", "fourth"];

/// What narrows a noun phrase down beyond category and colour (at most one per phrase).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Modifier {
    Size(Superlative),
    Region(Region),
    /// 1-based rank counted from `Direction` among the objects matching category and colour.
    Ordinal(u8, Direction),
}

/// A noun phrase: "the [largest | second] [white] ship [in the top left | from the left]".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Desc {
    pub category: Category,
    pub colour: Option<Colour>,
    pub modifier: Option<Modifier>,
}

impl Desc {
    fn plain(category: Category, colour: Option<Colour>) -> Desc {
        Desc { category, colour, modifier: None }
    }

    fn matches(&self, o: &SceneObject) -> bool {
        o.category == self.category && self.colour.is_none_or(|c| c == o.colour)
    }
}

/// The structure of an expression. Relational targets are plain (category and colour) so that
/// a trailing place phrase always belongs to the anchor ("the vehicle right of the airplane on
/// the upper left": the airplane is on the upper left).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    Simple(Desc),
    Relation { target: Desc, relation: Relation, anchor: Desc },
    Between { target: Desc, a: Desc, b: Desc },
    /// "between the two storage tanks": the scene holds exactly two objects of `pair`.
    BetweenPair { target: Desc, pair: Category },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    Simple,
    Relational,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Simple => "simple",
            Tag::Relational => "relational",
        }
    }
}

impl Expr {
    pub fn tag(&self) -> Tag {
        match self {
            Expr::Simple(_) => Tag::Simple,
            _ => Tag::Relational,
        }
    }

    /// The expression's form, finer than its tag: what an evaluation groups by to see which
    /// kind of reasoning a model lacks (a bare category, a colour, a superlative, an image
    /// region, an ordinal, a relation to an anchor, between two anchors, between a pair).
    pub fn kind(&self) -> &'static str {
        match self {
            Expr::Simple(d) => match d.modifier {
                None if d.colour.is_none() => "category",
                None => "colour",
                Some(Modifier::Size(_)) => "superlative",
                Some(Modifier::Region(_)) => "region",
                Some(Modifier::Ordinal(..)) => "ordinal",
            },
            Expr::Relation { .. } => "relation",
            Expr::Between { .. } => "between",
            Expr::BetweenPair { .. } => "between-pair",
        }
    }
}

/// One generated sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    /// Index into `scene.objects`.
    pub target: usize,
    pub expr: Expr,
    pub sent: String,
    pub tag: Tag,
}

// ---------------------------------------------------------------------------------------------
// Semantics

/// Margin around the thirds of the image, as a fraction of its side.
pub const REGION_MARGIN: f32 = 0.04;
/// Directional relations: clearly true within this angle of the axis (degrees) …
pub const ANGLE_YES: f32 = 35.0;
/// … clearly false beyond this one.
pub const ANGLE_NO: f32 = 55.0;
/// "next to": box gap (fraction of the image side) clearly near / clearly not near.
pub const NEAR_YES: f32 = 0.04;
pub const NEAR_NO: f32 = 0.09;
/// Superlatives need the winner this many times the runner-up's area.
pub const SIZE_RATIO: f32 = 1.3;
/// Ordinals need neighbours in the ranking this far apart (fraction of the image side).
pub const ORDINAL_GAP: f32 = 0.03;
/// "between": position along the anchor segment `t` and distance from it `p` (fraction of the
/// segment length): clearly between for `t ∈ [T_YES, 1 − T_YES]` and `p ≤ P_YES`, clearly not for
/// `t ∉ [T_NO, 1 − T_NO]` or `p ≥ P_NO`.
pub const BETWEEN_T_YES: f32 = 0.2;
pub const BETWEEN_T_NO: f32 = 0.05;
pub const BETWEEN_P_YES: f32 = 0.25;
pub const BETWEEN_P_NO: f32 = 0.45;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Unsure,
}

impl Tri {
    /// `Yes` when `v ≤ yes`, `No` when `v ≥ no`, else `Unsure` (requires `yes < no`).
    fn below(v: f32, yes: f32, no: f32) -> Tri {
        if v <= yes {
            Tri::Yes
        } else if v >= no {
            Tri::No
        } else {
            Tri::Unsure
        }
    }

    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Yes, Tri::Yes) => Tri::Yes,
            _ => Tri::Unsure,
        }
    }
}

fn in_region(o: &SceneObject, region: Region, w: f32, h: f32) -> Tri {
    let (u, v) = (o.centroid.0 / w, o.centroid.1 / h);
    let m = REGION_MARGIN;
    let third = 1.0 / 3.0;
    let low = |t: f32| Tri::below(t, third - m, third + m);
    let high = |t: f32| Tri::below(1.0 - t, third - m, third + m);
    let mid = |t: f32| Tri::below((t - 0.5).abs(), 0.5 * third - m, 0.5 * third + m);
    match region {
        Region::TopLeft => low(v).and(low(u)),
        Region::Top => low(v),
        Region::TopRight => low(v).and(high(u)),
        Region::Left => low(u),
        Region::Centre => mid(u).and(mid(v)),
        Region::Right => high(u),
        Region::BottomLeft => high(v).and(low(u)),
        Region::Bottom => high(v),
        Region::BottomRight => high(v).and(high(u)),
    }
}

/// Gap between two mask boxes (0 when they overlap along both axes).
fn box_gap(a: &SceneObject, b: &SceneObject) -> f32 {
    let gx = (a.bbox[0] - b.bbox[2]).max(b.bbox[0] - a.bbox[2]).max(0.0);
    let gy = (a.bbox[1] - b.bbox[3]).max(b.bbox[1] - a.bbox[3]).max(0.0);
    gx.hypot(gy)
}

fn relation_holds(x: &SceneObject, a: &SceneObject, relation: Relation, side: f32) -> Tri {
    let (dx, dy) = (x.centroid.0 - a.centroid.0, x.centroid.1 - a.centroid.1);
    // Angle between the anchor→candidate direction and the relation's axis.
    let angle = |ax: f32, ay: f32| (dx * ay - dy * ax).abs().atan2(dx * ax + dy * ay).to_degrees();
    match relation {
        Relation::LeftOf => Tri::below(angle(-1.0, 0.0), ANGLE_YES, ANGLE_NO),
        Relation::RightOf => Tri::below(angle(1.0, 0.0), ANGLE_YES, ANGLE_NO),
        Relation::Above => Tri::below(angle(0.0, -1.0), ANGLE_YES, ANGLE_NO),
        Relation::Below => Tri::below(angle(0.0, 1.0), ANGLE_YES, ANGLE_NO),
        Relation::NextTo => Tri::below(box_gap(x, a), NEAR_YES * side, NEAR_NO * side),
    }
}

fn between(x: &SceneObject, a: &SceneObject, b: &SceneObject) -> Tri {
    let (abx, aby) = (b.centroid.0 - a.centroid.0, b.centroid.1 - a.centroid.1);
    let (axx, axy) = (x.centroid.0 - a.centroid.0, x.centroid.1 - a.centroid.1);
    let len2 = abx * abx + aby * aby;
    if len2 < 1.0 {
        return Tri::No;
    }
    let t = (axx * abx + axy * aby) / len2;
    let p = (axx * aby - axy * abx).abs() / len2; // distance / |ab|
    let centred = Tri::below((t - 0.5).abs(), 0.5 - BETWEEN_T_YES, 0.5 - BETWEEN_T_NO);
    centred.and(Tri::below(p, BETWEEN_P_YES, BETWEEN_P_NO))
}

/// Objects a noun phrase denotes; `None` when some object sits in a margin zone.
fn resolve_desc(desc: &Desc, scene: &Scene) -> Option<Vec<usize>> {
    let (w, h) = (scene.width as f32, scene.height as f32);
    let set: Vec<usize> = (0..scene.objects.len()).filter(|&i| desc.matches(&scene.objects[i])).collect();
    let obj = |i: usize| &scene.objects[i];
    match desc.modifier {
        None => Some(set),
        Some(Modifier::Region(r)) => {
            let mut out = Vec::new();
            for &i in &set {
                match in_region(obj(i), r, w, h) {
                    Tri::Yes => out.push(i),
                    Tri::No => {}
                    Tri::Unsure => return None,
                }
            }
            Some(out)
        }
        Some(Modifier::Size(s)) => {
            if set.len() < 2 {
                return None;
            }
            let mut by_area = set.clone();
            by_area.sort_by_key(|&i| obj(i).area);
            if s == Superlative::Largest {
                by_area.reverse();
            }
            let (first, second) = (obj(by_area[0]).area as f32, obj(by_area[1]).area as f32);
            let clear = if s == Superlative::Largest { first >= SIZE_RATIO * second } else { second >= SIZE_RATIO * first };
            clear.then(|| vec![by_area[0]])
        }
        Some(Modifier::Ordinal(k, dir)) => {
            let k = k as usize;
            // "The first from the left" reads naturally from two objects on, higher ranks from
            // three on ("the second of two from the left" is the first from the right).
            if set.len() < if k == 1 { 2 } else { 3 } || k == 0 || k > set.len() {
                return None;
            }
            let key = |i: usize| match dir {
                Direction::Left => obj(i).centroid.0,
                Direction::Right => -obj(i).centroid.0,
                Direction::Top => obj(i).centroid.1,
                Direction::Bottom => -obj(i).centroid.1,
            };
            let mut ranked = set.clone();
            ranked.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
            let gap = ORDINAL_GAP * w.max(h);
            let target = key(ranked[k - 1]);
            let clear_before = k == 1 || target - key(ranked[k - 2]) >= gap;
            let clear_after = k == ranked.len() || key(ranked[k]) - target >= gap;
            (clear_before && clear_after).then(|| vec![ranked[k - 1]])
        }
    }
}

/// The single object a phrase denotes, if it denotes exactly one.
fn unique(desc: &Desc, scene: &Scene) -> Option<usize> {
    match resolve_desc(desc, scene)?.as_slice() {
        [i] => Some(*i),
        _ => None,
    }
}

/// True when no object of `scene` could be what `expr` names: it resolves to nothing, or no
/// object even has the target's category and colour (so an anchor that is missing or not unique
/// cannot make it ambiguous). What a large scene's other cells must satisfy.
pub fn names_nothing(expr: &Expr, scene: &Scene) -> bool {
    let target = match expr {
        Expr::Simple(d) => d,
        Expr::Relation { target, .. } | Expr::Between { target, .. } | Expr::BetweenPair { target, .. } => target,
    };
    resolve(expr, scene).is_some_and(|v| v.is_empty()) || !scene.objects.iter().any(|o| target.matches(o))
}

/// Objects an expression denotes under the margin semantics; `None` when the expression's
/// anchors are not unique or some object sits in a margin zone.
pub fn resolve(expr: &Expr, scene: &Scene) -> Option<Vec<usize>> {
    let side = scene.width.max(scene.height) as f32;
    let filter = |target: &Desc, exclude: &[usize], test: &dyn Fn(&SceneObject) -> Tri| {
        let mut out = Vec::new();
        for (i, o) in scene.objects.iter().enumerate() {
            if !target.matches(o) || exclude.contains(&i) {
                continue;
            }
            match test(o) {
                Tri::Yes => out.push(i),
                Tri::No => {}
                Tri::Unsure => return None,
            }
        }
        Some(out)
    };
    match expr {
        Expr::Simple(d) => resolve_desc(d, scene),
        Expr::Relation { target, relation, anchor } => {
            let a = unique(anchor, scene)?;
            filter(target, &[a], &|o| relation_holds(o, &scene.objects[a], *relation, side))
        }
        Expr::Between { target, a, b } => {
            let (a, b) = (unique(a, scene)?, unique(b, scene)?);
            if a == b {
                return None;
            }
            filter(target, &[a, b], &|o| between(o, &scene.objects[a], &scene.objects[b]))
        }
        Expr::BetweenPair { target, pair } => {
            let pair: Vec<usize> = (0..scene.objects.len()).filter(|&i| scene.objects[i].category == *pair).collect();
            let &[a, b] = pair.as_slice() else { return None };
            filter(target, &[a, b], &|o| between(o, &scene.objects[a], &scene.objects[b]))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generation

/// Every expression that denotes exactly object `t`, with a preference weight; the ranking forms
/// (ordinals, superlatives) weigh `ranking_weight`.
fn candidates(scene: &Scene, t: usize, ranking_weight: f32) -> Vec<(Expr, f32)> {
    let o = &scene.objects[t];
    let bases = [Desc::plain(o.category, None), Desc::plain(o.category, Some(o.colour))];
    let only = |e: &Expr| resolve(e, scene).is_some_and(|s| s == [t]);
    let mut out: Vec<(Expr, f32)> = Vec::new();
    let category_unique = unique(&bases[0], scene) == Some(t);

    // Simple: the target's own properties.
    let mut modifiers: Vec<Option<Modifier>> = vec![None];
    modifiers.extend([Superlative::Largest, Superlative::Smallest].map(|s| Some(Modifier::Size(s))));
    modifiers.extend(Region::ALL.map(|r| Some(Modifier::Region(r))));
    for k in 1..=ORDINALS.len() as u8 {
        modifiers.extend(Direction::ALL.map(|d| Some(Modifier::Ordinal(k, d))));
    }
    for base in bases {
        for &m in &modifiers {
            let e = Expr::Simple(Desc { modifier: m, ..base });
            if only(&e) {
                // Bare category names are easy; keep them, but rarely.
                let w = match m {
                    None if base.colour.is_none() => 0.5,
                    Some(Modifier::Size(_) | Modifier::Ordinal(..)) => ranking_weight,
                    _ => 1.0,
                };
                out.push((e, w));
            }
        }
    }

    // Relational: anchors described by their own unique phrase.
    let anchor_descs = |a: usize| -> Vec<Desc> {
        let ao = &scene.objects[a];
        let mut v = Vec::new();
        for colour in [None, Some(ao.colour)] {
            for m in [None]
                .into_iter()
                .chain(Region::ALL.map(|r| Some(Modifier::Region(r))))
                .chain([Superlative::Largest, Superlative::Smallest].map(|s| Some(Modifier::Size(s))))
            {
                let d = Desc { category: ao.category, colour, modifier: m };
                if unique(&d, scene) == Some(a) {
                    v.push(d);
                }
            }
        }
        // Shortest first: no modifier, then colour only, then the rest.
        v.sort_by_key(|d| (d.modifier.is_some() as u8, d.colour.is_some() as u8));
        v.truncate(3);
        v
    };
    let anchors: Vec<Vec<Desc>> = (0..scene.objects.len()).map(|a| if a == t { Vec::new() } else { anchor_descs(a) }).collect();
    // Relations that are needed to single out the target are the interesting ones.
    let rel_weight = if category_unique { 0.6 } else { 3.0 };
    for (a, descs) in anchors.iter().enumerate() {
        for anchor in descs {
            for relation in Relation::ALL {
                for target in bases {
                    let e = Expr::Relation { target, relation, anchor: *anchor };
                    if only(&e) {
                        out.push((e, rel_weight / descs.len() as f32));
                    }
                }
            }
        }
        for other in &anchors[a + 1..] {
            let (Some(da), Some(db)) = (descs.first(), other.first()) else { continue };
            for target in bases {
                let e = Expr::Between { target, a: *da, b: *db };
                if only(&e) {
                    out.push((e, rel_weight));
                }
            }
        }
    }
    for pair in Category::ALL {
        if pair == o.category {
            continue;
        }
        for target in bases {
            let e = Expr::BetweenPair { target, pair };
            if only(&e) {
                out.push((e, rel_weight));
            }
        }
    }
    out
}

/// Up to `n` expressions for `scene`, spread over distinct targets, alternating between
/// relational and simple where the scene allows both; the benchmark's mix of forms.
pub fn generate_expressions(scene: &Scene, n: usize, rng: &mut SynthRng) -> Vec<Expression> {
    generate_expressions_weighted(scene, n, 1.0, rng)
}

/// [`generate_expressions`] with the ranking forms (ordinals, superlatives) weighted
/// `ranking_weight` against the other simple forms (see [`super::SynthConfig::ranking_weight`]).
pub fn generate_expressions_weighted(scene: &Scene, n: usize, ranking_weight: f32, rng: &mut SynthRng) -> Vec<Expression> {
    let mut order: Vec<usize> = (0..scene.objects.len()).collect();
    rng.shuffle(&mut order);
    let pools: Vec<Vec<(Expr, f32)>> = (0..scene.objects.len()).map(|t| candidates(scene, t, ranking_weight)).collect();
    let mut out: Vec<Expression> = Vec::new();
    // Round-robin over targets; a second pass reuses targets with a different expression.
    for round in 0..3 {
        for &t in &order {
            if out.len() >= n {
                return out;
            }
            let want = if out.len().is_multiple_of(2) { Tag::Relational } else { Tag::Simple };
            let unused: Vec<&(Expr, f32)> =
                pools[t].iter().filter(|(e, _)| !out.iter().any(|x| x.target == t && x.expr == *e)).collect();
            let preferred: Vec<&(Expr, f32)> = unused.iter().copied().filter(|(e, _)| e.tag() == want).collect();
            let pool = if preferred.is_empty() { &unused } else { &preferred };
            if pool.is_empty() || (round > 0 && out.iter().filter(|x| x.target == t).count() > round) {
                continue;
            }
            let weights: Vec<f32> = pool.iter().map(|(_, w)| *w).collect();
            let expr = pool[rng.weighted(&weights)].0.clone();
            let sent = render(&expr, rng);
            if out.iter().any(|x| x.sent == sent) {
                continue;
            }
            out.push(Expression { target: t, tag: expr.tag(), expr, sent });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Surface forms

fn noun_phrase(d: &Desc, rng: &mut SynthRng) -> String {
    let mut words = vec!["the"];
    match d.modifier {
        Some(Modifier::Size(Superlative::Largest)) => words.push("largest"),
        Some(Modifier::Size(Superlative::Smallest)) => words.push("smallest"),
        Some(Modifier::Ordinal(k, _)) => words.push(ORDINALS[k as usize - 1]),
        _ => {}
    }
    if let Some(c) = d.colour {
        words.push(c.name());
    }
    words.push(d.category.name());
    match d.modifier {
        Some(Modifier::Region(r)) => words.push(*rng.pick(r.phrases())),
        Some(Modifier::Ordinal(_, dir)) => {
            words.push("from the");
            words.push(dir.word());
        }
        _ => {}
    }
    words.join(" ")
}

/// Write `expr` in one of its surface forms. Fronted forms ("left of the tank is the red
/// vehicle") name the anchor first, so the target is not always the first entity mentioned.
pub fn render(expr: &Expr, rng: &mut SynthRng) -> String {
    match expr {
        Expr::Simple(d) => noun_phrase(d, rng),
        Expr::Relation { target, relation, anchor } => {
            let (t, a) = (noun_phrase(target, rng), noun_phrase(anchor, rng));
            let rel = *rng.pick(relation.phrases());
            match rng.weighted(&[0.5, 0.2, 0.3]) {
                0 => format!("{t} {rel} {a}"),
                1 => format!("{t} that is {rel} {a}"),
                _ => format!("{rel} {a} is {t}"),
            }
        }
        Expr::Between { target, a, b } => {
            let (t, a, b) = (noun_phrase(target, rng), noun_phrase(a, rng), noun_phrase(b, rng));
            if rng.chance(0.7) {
                format!("{t} between {a} and {b}")
            } else {
                format!("between {a} and {b} is {t}")
            }
        }
        Expr::BetweenPair { target, pair } => format!("{} between the two {}", noun_phrase(target, rng), pair.plural()),
    }
}

/// Every word the grammar can produce, sorted (a word-level tokenizer is built from it).
pub fn vocabulary() -> Vec<String> {
    let mut phrases: Vec<&str> = vec!["the", "is", "that", "between", "and", "two", "from"];
    phrases.extend(ORDINALS);
    phrases.extend(["largest", "smallest"]);
    phrases.extend(Category::ALL.map(|c| c.name()));
    phrases.extend(Category::ALL.map(|c| c.plural()));
    phrases.extend(Colour::ALL.map(|c| c.name()));
    phrases.extend(Direction::ALL.map(|d| d.word()));
    for r in Region::ALL {
        phrases.extend(r.phrases());
    }
    for r in Relation::ALL {
        phrases.extend(r.phrases());
    }
    let mut words: Vec<String> = phrases.iter().flat_map(|p| p.split(' ')).map(str::to_string).collect();
    words.sort();
    words.dedup();
    words
}
