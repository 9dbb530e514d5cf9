//! Whole scenes end to end on the embedded nano model: a generated GeoTIFF scene with ground
//! truth (`synth-scene`), `segment` tiling it (GeoTIFF mask with the scene's georeferencing,
//! GeoJSON polygons in its coordinates), `eval-scene`, and tiling that must not change an answer.

use rsrefseg::whole_scene::decode_scene;
use std::path::PathBuf;
use std::process::{Command, Output};

fn rsrefseg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rsrefseg")).args(args).output().expect("the rsrefseg binary runs")
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[test]
fn a_geotiff_scene_is_tiled_and_its_mask_keeps_the_georeferencing() {
    let dir = scratch("whole-scene");
    let data = dir.join("data");
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    ok(&rsrefseg(&["synth-scene", "--out", &s(&data), "--seed", "3", "--cells", "3", "--targets", "2", "--origin", "600000,5000000"]));
    let truth = json(data.join("truth.json"));
    assert_eq!((truth["width"].as_u64(), truth["height"].as_u64()), (Some(768), Some(768)));
    let sentence = truth["targets"][0]["sentence"].as_str().unwrap().to_owned();

    // A GeoTIFF is tiled without being asked (auto), localized first.
    let out_dir = dir.join("out");
    ok(&rsrefseg(&["segment", "--image", &s(&data.join("scene.tif")), "--text", &sentence, "--out-dir", &s(&out_dir)]));
    let result = json(out_dir.join("result.json"));
    let scene = &result["scene"];
    assert_eq!(scene["grid"], serde_json::json!([4, 4]), "{scene}");
    let answered = scene["tiles_answered"].as_u64().unwrap();
    assert!((1..=4).contains(&answered), "{answered} tiles answered");
    assert!(scene["tiles"].as_array().unwrap().iter().all(|t| t["score"].is_number()), "every tile is localized");
    assert_eq!(scene["georeference"]["epsg"], 32633);

    // The mask GeoTIFF carries the scene's transform; its pixels are the PNG mask's.
    let (mask_rgb, mask_geo) = decode_scene(&std::fs::read(out_dir.join("mask.tif")).unwrap()).unwrap();
    let (_, scene_geo) = decode_scene(&std::fs::read(data.join("scene.tif")).unwrap()).unwrap();
    assert_eq!(mask_geo.as_ref().map(|g| g.affine), scene_geo.as_ref().map(|g| g.affine));
    assert_eq!(mask_geo.unwrap().affine, [0.5, 0.0, 600000.0, 0.0, -0.5, 5000000.0]);
    let png = image::open(out_dir.join("mask.png")).unwrap().to_luma8();
    let tif: Vec<u8> = mask_rgb.data.chunks_exact(3).map(|p| p[0]).collect();
    assert_eq!(png.as_raw(), &tif);
    let pixels = tif.iter().filter(|&&v| v != 0).count();
    assert_eq!(result["mask_pixels"].as_u64(), Some(pixels as u64));

    // The polygons are in map metres, inside the scene, and cover the mask's area.
    let geojson = json(out_dir.join("mask.geojson"));
    assert_eq!(geojson["crs"]["properties"]["name"], "urn:ogc:def:crs:EPSG::32633");
    let features = geojson["features"].as_array().unwrap();
    assert_eq!(features.len() as u64, scene["polygons"].as_u64().unwrap());
    let area: f64 = features.iter().map(|f| f["properties"]["area"].as_f64().unwrap()).sum();
    // Marching squares cuts corners: at most half a pixel per boundary pixel, 0.25 m² a pixel.
    assert!(area <= pixels as f64 * 0.25 + 1e-6 && area >= pixels as f64 * 0.25 * 0.5 - 1.0, "{area} m² for {pixels} px");
    for f in features {
        for ring in f["geometry"]["coordinates"].as_array().unwrap() {
            for p in ring.as_array().unwrap() {
                let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
                assert!((600000.0..=600384.0).contains(&x) && (4999616.0..=5000000.0).contains(&y), "({x}, {y})");
            }
        }
    }
    assert!(out_dir.join("overview.png").is_file());

    // Every tile answered; evaluation prints its summary and writes JSON.
    let all_dir = dir.join("all");
    ok(&rsrefseg(&["segment", "--image", &s(&data.join("scene.tif")), "--text", &sentence, "--tiles", "all", "--out-dir", &s(&all_dir)]));
    assert_eq!(json(all_dir.join("result.json"))["scene"]["tiles_answered"].as_u64(), Some(16));
    let report = dir.join("eval.json");
    let out = rsrefseg(&["eval-scene", "--data", &s(&data), "--threads", "2", "--json", &s(&report)]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("gIoU"));
    let report = json(report);
    assert_eq!(report["samples"].as_array().unwrap().len(), 2);
    assert!((0.0..=1.0).contains(&report["giou"].as_f64().unwrap()));
    // eval-scene keeps SigLIP's tile tokens from the first sentence for the second: the second
    // answer is the one a fresh `segment` gives.
    let second = truth["targets"][1]["sentence"].as_str().unwrap().to_owned();
    let fresh = dir.join("second");
    ok(&rsrefseg(&["segment", "--image", &s(&data.join("scene.tif")), "--text", &second, "--out-dir", &s(&fresh)]));
    assert_eq!(json(fresh.join("result.json"))["mask_pixels"], report["samples"][1]["mask_pixels"]);
}

/// A scene of exactly one tile: the tiled answer is the untiled one, pixel for pixel (the
/// merger's weights cancel; nothing is lost at the tile's borders).
#[test]
fn one_tile_gives_the_untiled_answer() {
    let dir = scratch("one-tile");
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let data = dir.join("data");
    ok(&rsrefseg(&["synth-scene", "--out", &s(&data), "--seed", "5", "--cells", "1", "--targets", "1"]));
    let sentence = json(data.join("truth.json"))["targets"][0]["sentence"].as_str().unwrap().to_owned();
    let scene = s(&data.join("scene.tif"));
    ok(&rsrefseg(&["segment", "--image", &scene, "--text", &sentence, "--tiles", "all", "--out-dir", &s(&dir.join("tiled"))]));
    ok(&rsrefseg(&["segment", "--image", &scene, "--text", &sentence, "--tiles", "off", "--out-dir", &s(&dir.join("plain"))]));
    let tiled = image::open(dir.join("tiled/mask.png")).unwrap().to_luma8();
    let plain = image::open(dir.join("plain/mask.png")).unwrap().to_luma8();
    assert_eq!(tiled.as_raw(), plain.as_raw());
    assert!(tiled.as_raw().iter().any(|&v| v != 0), "the answer is not empty");
}

#[test]
fn bad_tiling_options_are_refused_before_the_model_loads() {
    let dir = scratch("bad-tiling");
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let data = dir.join("data");
    ok(&rsrefseg(&["synth-scene", "--out", &s(&data), "--seed", "5", "--cells", "2", "--targets", "1"]));
    let scene = s(&data.join("scene.tif"));
    for (args, message) in [
        (vec!["--tiles", "all", "--tile", "8"], "--tile must be between 16 and 4096"),
        (vec!["--tiles", "all", "--overlap", "200"], "more than half the tile"),
        (vec!["--tiles", "localize", "--max-tiles", "0"], "--max-tiles"),
        (vec!["--point", "10,10"], "pass --tiles off"),
    ] {
        let mut all = vec!["segment", "--image", scene.as_str(), "--text", "the ship", "--out-dir"];
        let out_dir = s(&dir.join("out"));
        all.push(&out_dir);
        all.extend(args.iter().copied());
        let out = rsrefseg(&all);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!dir.join("out/mask.tif").exists(), "{args:?} wrote a mask");
    }
    for (args, message) in [(vec!["--cells", "33"], "--cells must be between 1 and 32"), (vec!["--cells", "2", "--targets", "5"], "targets")] {
        let mut all = vec!["synth-scene", "--out"];
        let out_dir = s(&dir.join("bad"));
        all.push(&out_dir);
        all.extend(args.iter().copied());
        let out = rsrefseg(&all);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(message), "{args:?}");
        assert!(!dir.join("bad/scene.tif").exists());
    }
}
