//! COCO RLE against real RISBench records decoded by pycocotools (`metrics_io.json`,
//! `rle_examples`): foreground count, box, runs and the sha256 of the row-major mask; then
//! re-encoding must give back the released string byte for byte.

use rsrefseg::data::rle::{Mask, Rle};
use serde_json::Value;
use std::path::PathBuf;

fn metrics_io() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/reference/metrics_io.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// SHA-256 (FIPS 180-4), enough to compare a mask with the fixture's digest without a crate.
fn sha256_hex(msg: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut data = msg.to_vec();
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    data.extend_from_slice(&((msg.len() as u64) * 8).to_be_bytes());
    for block in data.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[test]
fn sha256_known_answers() {
    assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn decodes_real_risbench_records_like_pycocotools() {
    let io = metrics_io();
    let examples = io["rle_examples"].as_array().unwrap();
    assert_eq!(examples.len(), 3);
    for ex in examples {
        let id = ex["image_id"].as_str().unwrap();
        let h = ex["size"][0].as_u64().unwrap() as usize;
        let w = ex["size"][1].as_u64().unwrap() as usize;
        let counts = ex["counts"].as_str().unwrap();
        let rle = Rle::from_string(counts, h, w).unwrap_or_else(|e| panic!("{id}: {e}"));

        assert_eq!(rle.counts.len() as u64, ex["num_runs"].as_u64().unwrap(), "{id}: runs");
        let first: Vec<u32> = ex["first_runs"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(&rle.counts[..first.len()], &first[..], "{id}: first runs");
        assert_eq!(*rle.counts.last().unwrap() as u64, ex["last_run"].as_u64().unwrap(), "{id}: last run");
        assert_eq!(rle.area(), ex["foreground_pixels"].as_u64().unwrap(), "{id}: area");
        let bb: Vec<usize> =
            ex["bbox_xyxy_inclusive"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(rle.bbox_xyxy_inclusive().unwrap().to_vec(), bb, "{id}: bbox");

        let mask = rle.decode();
        assert_eq!((mask.height, mask.width), (h, w));
        assert_eq!(mask.area(), rle.area());
        assert_eq!(sha256_hex(&mask.data), ex["sha256_rowmajor_u8"].as_str().unwrap(), "{id}: mask digest");

        // Encoding the decoded mask reproduces the released string exactly.
        let again = Rle::encode(&mask).unwrap();
        assert_eq!(again, rle, "{id}: re-encoded runs");
        assert_eq!(again.to_string(), counts, "{id}: re-encoded string");
        // And a 0/255 copy (how RefSegRS masks are stored) encodes the same.
        let m255: Vec<u8> = mask.data.iter().map(|&v| v * 255).collect();
        assert_eq!(Rle::encode(&Mask::from_nonzero(h, w, &m255).unwrap()).unwrap().to_string(), counts);
    }
}
