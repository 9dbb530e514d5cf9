//! Synthetic benchmark: same seed → identical bytes; every sentence denotes exactly its target
//! under a checker written apart from the generator (it parses the *text* and measures the
//! objects on their masks); masks survive the COCO RLE round trip through the written files.

use rsrefseg::data::rle::Rle;
use rsrefseg::synth::writer::{scene_with_expressions, split_of, write_dataset, SPLITS};
use rsrefseg::synth::{vocabulary, Scene, SynthConfig, Tag};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rsrefseg-synth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["", "images"] {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for p in names {
            out.push((p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn same_seed_gives_identical_files() {
    let config = SynthConfig::default();
    let (a, b, c) = (temp_dir("a"), temp_dir("b"), temp_dir("c"));
    let sa = write_dataset(&a, &config, 7, 6).unwrap();
    let sb = write_dataset(&b, &config, 7, 6).unwrap();
    write_dataset(&c, &config, 8, 6).unwrap();
    assert_eq!(sa, sb);
    let (fa, fb, fc) = (files_of(&a), files_of(&b), files_of(&c));
    assert_eq!(fa.len(), 3 + 6, "three split files and six images");
    for ((na, da), (nb, db)) in fa.iter().zip(&fb) {
        assert_eq!(na, nb);
        assert!(da == db, "{na} differs between two runs with the same seed");
    }
    assert_ne!(fa, fc, "another seed gives another dataset");
    // Scene i does not depend on how many scenes are generated.
    let d = temp_dir("d");
    write_dataset(&d, &config, 7, 3).unwrap();
    assert_eq!(std::fs::read(a.join("images/000002.png")).unwrap(), std::fs::read(d.join("images/000002.png")).unwrap());
    for dir in [a, b, c, d] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Independent checker: facts from masks, meaning from the sentence text.

struct Facts {
    category: &'static str,
    colour: &'static str,
    area: usize,
    cx: f32,
    cy: f32,
    bbox: [f32; 4],
}

fn facts(scene: &Scene) -> Vec<Facts> {
    scene
        .objects
        .iter()
        .map(|o| {
            let (mut n, mut sx, mut sy) = (0usize, 0f64, 0f64);
            let mut bbox = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
            for y in 0..scene.height {
                for x in 0..scene.width {
                    if o.mask[y * scene.width + x] != 0 {
                        n += 1;
                        sx += x as f64 + 0.5;
                        sy += y as f64 + 0.5;
                        let (xf, yf) = (x as f32, y as f32);
                        bbox = [bbox[0].min(xf), bbox[1].min(yf), bbox[2].max(xf + 1.0), bbox[3].max(yf + 1.0)];
                    }
                }
            }
            Facts {
                category: o.category.name(),
                colour: o.colour.name(),
                area: n,
                cx: (sx / n as f64) as f32,
                cy: (sy / n as f64) as f32,
                bbox,
            }
        })
        .collect()
}

const CATEGORIES: [(&str, &str); 6] = [
    ("airplane", "airplanes"),
    ("ship", "ships"),
    ("vehicle", "vehicles"),
    ("storage tank", "storage tanks"),
    ("building", "buildings"),
    ("tennis court", "tennis courts"),
];
const COLOURS: [&str; 6] = ["white", "grey", "red", "blue", "green", "yellow"];
const ORDINALS: [&str; 4] = ["first", "second", "third", "fourth"];
/// (phrase, horizontal third, vertical third); `None` = any.
const PLACES: [(&str, Option<u8>, Option<u8>); 18] = [
    ("in the top left", Some(0), Some(0)),
    ("in the upper left", Some(0), Some(0)),
    ("at the top left", Some(0), Some(0)),
    ("at the top", None, Some(0)),
    ("in the top right", Some(2), Some(0)),
    ("in the upper right", Some(2), Some(0)),
    ("at the top right", Some(2), Some(0)),
    ("on the left", Some(0), None),
    ("in the centre", Some(1), Some(1)),
    ("in the middle", Some(1), Some(1)),
    ("on the right", Some(2), None),
    ("in the bottom left", Some(0), Some(2)),
    ("in the lower left", Some(0), Some(2)),
    ("at the bottom left", Some(0), Some(2)),
    ("at the bottom", None, Some(2)),
    ("in the bottom right", Some(2), Some(2)),
    ("in the lower right", Some(2), Some(2)),
    ("at the bottom right", Some(2), Some(2)),
];
/// Relation phrases, longest first so that "to the left of" is not read as "left of".
const RELATIONS: [(&str, char); 11] = [
    ("to the right of", 'R'),
    ("on the right of", 'R'),
    ("to the left of", 'L'),
    ("on the left of", 'L'),
    ("right of", 'R'),
    ("left of", 'L'),
    ("next to", 'N'),
    ("beside", 'N'),
    ("near", 'N'),
    ("above", 'A'),
    ("below", 'B'),
];

#[derive(Debug)]
enum Narrow {
    None,
    Largest,
    Smallest,
    Place(Option<u8>, Option<u8>),
    Rank(usize, String),
}

#[derive(Debug)]
struct Np {
    category: String,
    colour: Option<String>,
    narrow: Narrow,
}

fn parse_np(text: &str) -> Option<Np> {
    let mut rest = text.strip_prefix("the ")?;
    let mut narrow = Narrow::None;
    if let Some(r) = rest.strip_prefix("largest ") {
        (rest, narrow) = (r, Narrow::Largest);
    } else if let Some(r) = rest.strip_prefix("smallest ") {
        (rest, narrow) = (r, Narrow::Smallest);
    }
    let mut rank = None;
    for (k, w) in ORDINALS.iter().enumerate() {
        if let Some(r) = rest.strip_prefix(&format!("{w} ")) {
            (rest, rank) = (r, Some(k + 1));
        }
    }
    let mut colour = None;
    for c in COLOURS {
        if let Some(r) = rest.strip_prefix(&format!("{c} ")) {
            (rest, colour) = (r, Some(c.to_string()));
        }
    }
    let (cat, _) = CATEGORIES.iter().find(|(c, _)| rest == *c || rest.starts_with(&format!("{c} ")))?;
    let tail = rest[cat.len()..].trim_start();
    if let Some(k) = rank {
        let dir = tail.strip_prefix("from the ")?;
        ["left", "right", "top", "bottom"].contains(&dir).then_some(())?;
        narrow = Narrow::Rank(k, dir.to_string());
    } else if !tail.is_empty() {
        let (_, h, v) = PLACES.iter().find(|(p, _, _)| *p == tail)?;
        if !matches!(narrow, Narrow::None) {
            return None;
        }
        narrow = Narrow::Place(*h, *v);
    }
    Some(Np { category: cat.to_string(), colour, narrow })
}

fn third(t: f32) -> u8 {
    if t < 1.0 / 3.0 {
        0
    } else if t < 2.0 / 3.0 {
        1
    } else {
        2
    }
}

fn denote(np: &Np, objs: &[Facts], side: f32) -> Vec<usize> {
    let mut set: Vec<usize> = (0..objs.len())
        .filter(|&i| objs[i].category == np.category && np.colour.as_deref().is_none_or(|c| c == objs[i].colour))
        .collect();
    match &np.narrow {
        Narrow::None => set,
        Narrow::Largest => set.iter().copied().max_by_key(|&i| objs[i].area).into_iter().collect(),
        Narrow::Smallest => set.iter().copied().min_by_key(|&i| objs[i].area).into_iter().collect(),
        Narrow::Place(h, v) => set
            .into_iter()
            .filter(|&i| {
                h.is_none_or(|h| third(objs[i].cx / side) == h) && v.is_none_or(|v| third(objs[i].cy / side) == v)
            })
            .collect(),
        Narrow::Rank(k, dir) => {
            let key = |i: usize| match dir.as_str() {
                "left" => objs[i].cx,
                "right" => -objs[i].cx,
                "top" => objs[i].cy,
                _ => -objs[i].cy,
            };
            set.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
            set.get(k - 1).copied().into_iter().collect()
        }
    }
}

fn relation(kind: char, x: &Facts, a: &Facts, side: f32) -> bool {
    let (dx, dy) = (x.cx - a.cx, x.cy - a.cy);
    match kind {
        'L' => -dx > 0.0 && dy.abs() <= -dx,
        'R' => dx > 0.0 && dy.abs() <= dx,
        'A' => -dy > 0.0 && dx.abs() <= -dy,
        'B' => dy > 0.0 && dx.abs() <= dy,
        _ => {
            let gx = (a.bbox[0] - x.bbox[2]).max(x.bbox[0] - a.bbox[2]).max(0.0);
            let gy = (a.bbox[1] - x.bbox[3]).max(x.bbox[1] - a.bbox[3]).max(0.0);
            gx.hypot(gy) <= 0.065 * side
        }
    }
}

fn between(x: &Facts, a: &Facts, b: &Facts) -> bool {
    let (ux, uy) = (b.cx - a.cx, b.cy - a.cy);
    let (vx, vy) = (x.cx - a.cx, x.cy - a.cy);
    let l2 = ux * ux + uy * uy;
    let t = (vx * ux + vy * uy) / l2;
    let p = (vx * uy - vy * ux).abs() / l2;
    (0.125..=0.875).contains(&t) && p <= 0.35
}

fn one(np: &Np, objs: &[Facts], side: f32) -> Option<usize> {
    match denote(np, objs, side).as_slice() {
        [i] => Some(*i),
        _ => None,
    }
}

/// Objects the sentence denotes; `Err` when it does not parse.
fn check(sent: &str, objs: &[Facts], side: f32) -> Result<Vec<usize>, String> {
    let bad = || format!("cannot parse {sent:?}");
    let plain = |np: &Np, exclude: &[usize]| -> Vec<usize> {
        let plain = Np { category: np.category.clone(), colour: np.colour.clone(), narrow: Narrow::None };
        denote(&plain, objs, side).into_iter().filter(|i| !exclude.contains(i)).collect()
    };
    let relational = |target: &str, rel: char, anchor: &str| -> Result<Vec<usize>, String> {
        let (t, a) = (parse_np(target).ok_or_else(bad)?, parse_np(anchor).ok_or_else(bad)?);
        let Some(a) = one(&a, objs, side) else { return Ok(Vec::new()) };
        Ok(plain(&t, &[a]).into_iter().filter(|&i| relation(rel, &objs[i], &objs[a], side)).collect())
    };
    let betweens = |target: &str, pair: &str| -> Result<Vec<usize>, String> {
        let t = parse_np(target).ok_or_else(bad)?;
        let ends: Vec<usize> = if let Some(plural) = pair.strip_prefix("the two ") {
            let (cat, _) = CATEGORIES.iter().find(|(_, p)| *p == plural).ok_or_else(bad)?;
            (0..objs.len()).filter(|&i| objs[i].category == *cat).collect()
        } else {
            let (a, b) = pair.split_once(" and ").ok_or_else(bad)?;
            let (a, b) = (parse_np(a).ok_or_else(bad)?, parse_np(b).ok_or_else(bad)?);
            one(&a, objs, side).into_iter().chain(one(&b, objs, side)).collect()
        };
        let &[a, b] = ends.as_slice() else { return Ok(Vec::new()) };
        Ok(plain(&t, &[a, b]).into_iter().filter(|&i| between(&objs[i], &objs[a], &objs[b])).collect())
    };

    if let Some(np) = parse_np(sent) {
        return Ok(denote(&np, objs, side));
    }
    // Fronted forms: the anchor comes first, the target after " is ".
    if let Some(rest) = sent.strip_prefix("between ") {
        let (pair, target) = rest.rsplit_once(" is ").ok_or_else(bad)?;
        return betweens(target, pair);
    }
    for (phrase, rel) in RELATIONS {
        if let Some(rest) = sent.strip_prefix(&format!("{phrase} ")) {
            let (anchor, target) = rest.rsplit_once(" is ").ok_or_else(bad)?;
            return relational(target, rel, anchor);
        }
    }
    // Target first: "the [colour] category" then the relation.
    let words: Vec<&str> = sent.split(' ').collect();
    for cut in (2..words.len()).rev() {
        let head = words[..cut].join(" ");
        let Some(np) = parse_np(&head) else { continue };
        if !matches!(np.narrow, Narrow::None) {
            continue;
        }
        let tail = words[cut..].join(" ");
        let tail = tail.strip_prefix("that is ").unwrap_or(&tail);
        if let Some(pair) = tail.strip_prefix("between ") {
            return betweens(&head, pair);
        }
        for (phrase, rel) in RELATIONS {
            if let Some(anchor) = tail.strip_prefix(&format!("{phrase} ")) {
                return relational(&head, rel, anchor);
            }
        }
    }
    Err(bad())
}

#[test]
fn every_expression_denotes_exactly_its_target() {
    let config = SynthConfig::default();
    let vocab = vocabulary();
    let (mut simple, mut relational, mut fronted, mut anchored_place) = (0, 0, 0, 0);
    // More scenes for a longer soak: RSREFSEG_SYNTH_SCENES=2000 cargo test --test synth.
    let scenes = std::env::var("RSREFSEG_SYNTH_SCENES").ok().and_then(|v| v.parse().ok()).unwrap_or(80u64);
    for index in 0..scenes {
        let (scene, expressions) = scene_with_expressions(&config, 2024, index);
        assert!(!expressions.is_empty(), "scene {index} got no expression");
        let objs = facts(&scene);
        let side = scene.width as f32;
        for e in &expressions {
            let got = check(&e.sent, &objs, side).unwrap_or_else(|err| panic!("scene {index}: {err}"));
            assert_eq!(got, vec![e.target], "scene {index}: {:?} denotes {got:?}, target {}", e.sent, e.target);
            for w in e.sent.split(' ') {
                assert!(vocab.iter().any(|v| v == w), "{w:?} of {:?} missing from the vocabulary", e.sent);
            }
            match e.tag {
                Tag::Simple => simple += 1,
                Tag::Relational => relational += 1,
            }
            // The checker is not a rubber stamp: a bare category names all objects of that kind.
            let kind = objs[e.target].category;
            let all = check(&format!("the {kind}"), &objs, side).unwrap();
            assert_eq!(all.len(), objs.iter().filter(|o| o.category == kind).count());
            fronted += (!e.sent.starts_with("the ")) as usize;
            anchored_place += (e.tag == Tag::Relational
                && e.sent.starts_with("the ")
                && PLACES.iter().any(|(p, _, _)| e.sent.ends_with(p))) as usize;
        }
    }
    assert!(simple > 50 && relational > 50, "simple {simple}, relational {relational}");
    assert!(fronted > 10, "sentences whose first entity is not the target: {fronted}");
    assert!(anchored_place > 3, "relational sentences whose anchor carries a place: {anchored_place}");
}

#[test]
fn masks_round_trip_through_the_written_files() {
    let config = SynthConfig::default();
    let dir = temp_dir("rle");
    let n = 10;
    let summary = write_dataset(&dir, &config, 11, n).unwrap();
    assert_eq!(summary.images, n);
    assert!(summary.samples.iter().all(|&s| s > 0), "every split has samples: {:?}", summary.samples);
    let mut lines = 0;
    for (k, split) in SPLITS.iter().enumerate() {
        let text = std::fs::read_to_string(dir.join(format!("{split}.jsonl"))).unwrap();
        for line in text.lines() {
            lines += 1;
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            for key in ["split", "image_id", "sent", "file_name", "segmentation", "category_name", "tag"] {
                assert!(keys.iter().any(|k| *k == key), "{key} missing in {line}");
            }
            assert_eq!(v["split"], *split);
            let index = v["image_id"].as_u64().unwrap();
            assert_eq!(split_of(&config, index as usize, n), k);
            let (scene, expressions) = scene_with_expressions(&config, 11, index);
            let e = expressions.iter().find(|e| e.sent == v["sent"]).expect("sentence of this scene");
            let object = &scene.objects[e.target];
            assert_eq!(v["category_name"], object.category.name());
            assert_eq!(v["tag"], e.tag.as_str());
            let size = &v["segmentation"]["size"];
            let (h, w) = (size[0].as_u64().unwrap() as usize, size[1].as_u64().unwrap() as usize);
            assert_eq!((h, w), (scene.height, scene.width));
            let rle = Rle::from_string(v["segmentation"]["counts"].as_str().unwrap(), h, w).unwrap();
            let mask = rle.decode();
            assert_eq!(mask.data, object.mask, "mask of {:?}", e.sent);
            assert_eq!(mask.area() as usize, object.area);
            // The image on disk is the scene's image.
            let img = image::open(dir.join(v["file_name"].as_str().unwrap())).unwrap().to_rgb8();
            assert_eq!(img.as_raw(), &scene.image);
        }
    }
    assert_eq!(lines, summary.samples.iter().sum::<usize>());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn masks_are_disjoint_and_inside_their_objects() {
    let config = SynthConfig::default();
    for index in 0..20 {
        let (scene, _) = scene_with_expressions(&config, 5, index);
        let n = scene.objects.len();
        assert!((1..=config.max_objects).contains(&n), "scene {index}: {n} objects");
        let mut owner = vec![usize::MAX; scene.width * scene.height];
        for (k, o) in scene.objects.iter().enumerate() {
            assert!(o.area >= 20, "scene {index}: object {k} has {} pixels", o.area);
            for (p, &m) in o.mask.iter().enumerate() {
                if m != 0 {
                    assert_eq!(owner[p], usize::MAX, "scene {index}: masks {k} and {} overlap", owner[p]);
                    owner[p] = k;
                }
            }
        }
    }
}

#[test]
fn vocabulary_is_small_and_sorted() {
    let v = vocabulary();
    assert!(v.len() < 80, "{} words", v.len());
    assert!(v.windows(2).all(|w| w[0] < w[1]));
    for w in ["the", "ship", "storage", "tank", "tennis", "court", "white", "second", "between", "left", "upper"] {
        assert!(v.iter().any(|x| x == w), "{w}");
    }
}
