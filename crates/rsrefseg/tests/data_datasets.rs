//! Dataset readers on tiny generated directory trees (RRSIS-D, RefSegRS, RISBench, JSONL) and
//! the §7.1 pipeline of `RefDataset`.

use rsrefseg::data::dataset::{Mode, RefDataset, PAD_LABEL};
use rsrefseg::data::jsonl::{self, Id};
use rsrefseg::data::rle::{Mask, Rle};
use rsrefseg::data::{refsegrs, risbench, rrsisd, MaskSource};
use rsrefseg::pre::{keep_ratio_size, resize_linear_u8, RgbImage};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rsrefseg-data-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn write_gray(path: &Path, h: usize, w: usize, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_raw(w as u32, h as u32, data.to_vec()).unwrap().save(path).unwrap();
}

fn write_rgb(path: &Path, h: usize, w: usize, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_raw(w as u32, h as u32, data.to_vec()).unwrap().save(path).unwrap();
}

fn pattern(h: usize, w: usize, seed: u32) -> Vec<u8> {
    (0..h * w * 3).map(|i| ((i as u32).wrapping_mul(2654435761u32).wrapping_add(seed) >> 24) as u8).collect()
}

/// A mask with a rectangle of ones.
fn rect(h: usize, w: usize, y0: usize, y1: usize, x0: usize, x1: usize) -> Mask {
    let mut m = Mask::zeros(h, w);
    for y in y0..y1 {
        for x in x0..x1 {
            m.data[y * w + x] = 1;
        }
    }
    m
}

/// `rrsisd/instances.json` for the three refs of the pickle fixtures.
fn write_rrsisd_instances(root: &Path) -> Vec<Mask> {
    let masks = vec![rect(6, 5, 1, 3, 1, 4), rect(6, 5, 0, 6, 0, 1), rect(6, 5, 4, 6, 2, 5)];
    let anns: Vec<_> = masks
        .iter()
        .zip([(100, 1, 13), (101, 1, 18), (102, 2, 15)])
        .map(|(m, (id, image_id, cat))| {
            let r = Rle::encode(m).unwrap();
            serde_json::json!({"bbox": [1, 2, 3, 4], "categories_id": cat, "id": id, "image_id": image_id,
                "segmentation": [{"size": [6, 5], "counts": r.to_string()}], "area": r.area()})
        })
        .collect();
    let inst = serde_json::json!({
        "images": [{"file_name": "00001.jpg", "height": 6, "width": 5, "id": 1}],
        "annotations": anns,
        "categories": [{"name": "ship", "id": 13}, {"name": "storagetank", "id": 15}, {"name": "vehicle", "id": 18}],
    });
    std::fs::create_dir_all(root.join("rrsisd")).unwrap();
    std::fs::write(root.join(rrsisd::INSTANCES), inst.to_string()).unwrap();
    masks
}

#[test]
fn rrsisd_joins_refs_and_instances_for_every_pickle_protocol() {
    for proto in [0, 2, 4] {
        let root = temp_dir(&format!("rrsisd-{proto}"));
        let masks = write_rrsisd_instances(&root);
        std::fs::copy(fixture(&format!("data_rrsisd_refs_p{proto}.p")), root.join(rrsisd::REFS)).unwrap();

        let recs = rrsisd::read_records(&root).unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].sent, "the vehicle \u{2192} caf\u{e9}", "protocol {proto}");
        assert_eq!(recs[2].sent, "a tank, it's round");
        assert_eq!(recs[0].image_id, Id::Int(1));
        assert_eq!(recs[0].category_name.as_deref(), Some("ship"));
        assert_eq!(recs[2].category_name.as_deref(), Some("storagetank"));
        assert_eq!(recs[1].ann_id, Some(101));
        assert_eq!(serde_json::to_string(&recs[0].bbox).unwrap(), "[1,2,3,4]");

        let test = rrsisd::read_samples(&root, "test").unwrap();
        assert_eq!(test.len(), 2);
        assert_eq!(test[0].image_path, root.join("images/rrsisd/JPEGImages/00001.jpg"));
        assert_eq!(test[0].category.as_deref(), Some("vehicle"));
        assert_eq!(test[0].load_mask().unwrap(), masks[1]);
        assert_eq!(test[1].load_mask().unwrap(), masks[2]);
        assert!(test[0].origin.ends_with("refs(unc).p[#1]"), "{}", test[0].origin);

        // JSONL written from these records reads back as the same samples.
        let out = root.join("rrsisd_test.jsonl");
        jsonl::write_records(&out, recs.iter().filter(|r| r.split == "test")).unwrap();
        let back = jsonl::read_samples(&out, &root.join(rrsisd::IMAGES), None).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].sentence.as_str(), &back[0].mask), (test[0].sentence.as_str(), &test[0].mask));
    }
}

#[test]
fn rrsisd_inconsistencies_are_errors_naming_the_ref() {
    let root = temp_dir("rrsisd-bad");
    write_rrsisd_instances(&root);
    // Drop annotation 101: ref #1 cannot be joined.
    let p = root.join(rrsisd::INSTANCES);
    let mut inst: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    inst["annotations"].as_array_mut().unwrap().remove(1);
    std::fs::write(&p, inst.to_string()).unwrap();
    std::fs::copy(fixture("data_rrsisd_refs_p2.p"), root.join(rrsisd::REFS)).unwrap();
    let e = rrsisd::read_records(&root).unwrap_err().to_string();
    assert!(e.contains("refs(unc).p[#1]") && e.contains("ann_id 101"), "{e}");
    // A pickle that is not a list of refs.
    std::fs::write(root.join(rrsisd::REFS), b"\x80\x02}q\x00.").unwrap();
    let e = rrsisd::read_records(&root).unwrap_err().to_string();
    assert!(e.contains("expected a list of refs"), "{e}");
}

#[test]
fn refsegrs_and_risbench_trees() {
    // RefSegRS: output_phrase_{split}.txt, images/<id>.tif, masks/<id>.tif (0/255).
    let root = temp_dir("refsegrs");
    let m = rect(4, 6, 1, 3, 2, 5);
    let m255: Vec<u8> = m.data.iter().map(|v| v * 255).collect();
    write_gray(&root.join("masks/7.tif"), 4, 6, &m255);
    write_rgb(&root.join("images/7.tif"), 4, 6, &pattern(4, 6, 1));
    std::fs::write(root.join("output_phrase_test.txt"), "7 the  long road\n").unwrap();
    let s = refsegrs::read_samples(&root, "test").unwrap();
    assert_eq!(s.len(), 1);
    // Everything after the first space, as the reference's split(' ') / join.
    assert_eq!(s[0].sentence, "the  long road");
    assert_eq!(s[0].image_path, root.join("images/7.tif"));
    assert_eq!(s[0].mask, MaskSource::File(root.join("masks/7.tif")));
    assert_eq!(s[0].load_mask().unwrap(), m);
    let recs = refsegrs::to_records(&root, "test").unwrap();
    assert_eq!(recs[0].image_id, Id::Str("7".into()));
    assert_eq!(recs[0].file_name, "7.tif");
    assert_eq!(recs[0].rle().unwrap(), Rle::encode(&m).unwrap());

    // RISBench: {split}.txt (or output_phrase_{split}.txt), img_rgb/<file>, mask/<file>.
    let root = temp_dir("risbench");
    write_gray(&root.join("mask/test_0_0.png"), 4, 6, &m255);
    write_rgb(&root.join("img_rgb/test_0_0.png"), 4, 6, &pattern(4, 6, 2));
    std::fs::write(root.join("test.txt"), "test_0_0.png a small white car\n").unwrap();
    let s = risbench::read_samples(&root, "test").unwrap();
    assert_eq!(s[0].sentence, "a small white car");
    assert_eq!(s[0].image_path, root.join("img_rgb/test_0_0.png"));
    assert_eq!(s[0].load_mask().unwrap(), m);
    let recs = risbench::to_records(&root, "test").unwrap();
    assert_eq!(
        (recs[0].image_id.clone(), recs[0].file_name.as_str()),
        (Id::Str("test_0_0.png".into()), "test_0_0.png")
    );
    assert!(risbench::read_samples(&root, "val").unwrap_err().to_string().contains("output_phrase_val.txt"));

    // Malformed list lines are all reported with their numbers.
    std::fs::write(root.join("train.txt"), "a.png fine\n\nlonely\nb.png also fine\n").unwrap();
    let e = risbench::read_samples(&root, "train").unwrap_err().to_string();
    assert!(e.contains("2 malformed") && e.contains("train.txt:2: empty line") && e.contains("train.txt:3:"), "{e}");
}

#[test]
fn pipeline_train_and_eval() {
    // A 6×4 (H×W) image with its 6×4 mask, S = 16.
    let root = temp_dir("pipeline");
    let (h0, w0, s) = (6, 4, 16);
    let rgb = pattern(h0, w0, 3);
    write_rgb(&root.join("img.png"), h0, w0, &rgb);
    let mask = rect(6, 4, 0, 4, 2, 4);
    let rec = jsonl::Record::new("train", Id::Int(0), "x", "img.png", &Rle::encode(&mask).unwrap());
    let mut missing = rec.clone();
    missing.file_name = "nope.png".into();
    // A mask of another size than its image (3×2 for the 6×4 image) is refused, not resized.
    let other = jsonl::Record::new("train", Id::Int(1), "y", "img.png", &Rle::encode(&rect(3, 2, 0, 2, 1, 2)).unwrap());
    let list = root.join("a.jsonl");
    jsonl::write_records(&list, [&rec, &missing, &other]).unwrap();

    let eval = RefDataset::from_jsonl(&list, &root, None, s, Mode::Eval).unwrap();
    let it = eval.get(0).unwrap();
    let (h1, w1) = keep_ratio_size(h0, w0, s);
    assert_eq!((h1, w1), (16, 11));
    assert_eq!(it.geometry.resized, (h1, w1));
    assert_eq!(it.gt_size, (h0, w0));
    assert_eq!(it.gt, mask.data);
    let img = RgbImage::new(h0, w0, rgb.clone()).unwrap();
    assert_eq!(it.image, resize_linear_u8(&img, h1, w1));
    let x = it.x01();
    assert_eq!(x.len(), 3 * s * s);
    assert_eq!(x[15], 0.0, "padding column");
    assert_eq!(x[s * s], it.image.data[1] as f32 / 255.0);

    let train = RefDataset::new(eval.samples.clone(), s, Mode::Train);
    let it = train.get(0).unwrap();
    assert_eq!(it.gt_size, (s, s));
    assert_eq!(it.gt.len(), s * s);
    assert!(it.gt[..w1].iter().all(|&v| v < 2));
    assert!(it.gt[w1..s].iter().all(|&v| v == PAD_LABEL));
    // 6×4 mask (cols 2..4, rows 0..4) → 16×11 nearest: source col = floor(x·4/11), row = floor(y·6/16).
    for y in 0..h1 {
        for x in 0..w1 {
            let (sy, sx) = ((y as f64 * (1.0 / (16.0 / 6.0))) as usize, (x as f64 * (1.0 / (11.0 / 4.0))) as usize);
            let want = (sy < 4 && sx >= 2) as u8;
            assert_eq!(it.gt[y * s + x], want, "({y},{x})");
        }
    }

    let e = eval.get(2).unwrap_err().to_string();
    assert!(e.contains("sample 2") && e.contains("the mask is 2×3") && e.contains("is 4×6"), "{e}");

    // A missing image names the sample and its line.
    let e = eval.get(1).unwrap_err().to_string();
    assert!(e.contains("sample 1") && e.contains("a.jsonl:2") && e.contains("nope.png"), "{e}");
}
