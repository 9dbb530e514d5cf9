//! Simulated corrective clicks, as interactive segmentation is evaluated (SAM, RITM): the next
//! click goes to the interior of the largest error — the error pixel farthest from any correct
//! pixel, among the missed object pixels (a positive click) and the false alarms (a negative
//! click), whichever reaches farther inside.

use crate::segmenter::Click;

/// City-block-and-diagonal (chamfer 3-4) distance of every `inside` pixel to the nearest pixel
/// that is not inside (the image border counts as outside), in units of 1/3 pixel.
fn chamfer(inside: &[bool], h: usize, w: usize) -> Vec<u32> {
    const FAR: u32 = u32::MAX / 2;
    let mut d: Vec<u32> = inside.iter().map(|&i| if i { FAR } else { 0 }).collect();
    let at = |d: &[u32], y: isize, x: isize| -> u32 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0
        } else {
            d[y as usize * w + x as usize]
        }
    };
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            if d[i] == 0 {
                continue;
            }
            let v = [at(&d, y, x - 1) + 3, at(&d, y - 1, x) + 3, at(&d, y - 1, x - 1) + 4, at(&d, y - 1, x + 1) + 4];
            d[i] = d[i].min(v.into_iter().min().unwrap_or(FAR));
        }
    }
    for y in (0..h as isize).rev() {
        for x in (0..w as isize).rev() {
            let i = y as usize * w + x as usize;
            if d[i] == 0 {
                continue;
            }
            let v = [at(&d, y, x + 1) + 3, at(&d, y + 1, x) + 3, at(&d, y + 1, x + 1) + 4, at(&d, y + 1, x - 1) + 4];
            d[i] = d[i].min(v.into_iter().min().unwrap_or(FAR));
        }
    }
    d
}

/// The next corrective click for a prediction `pred` of the ground truth `gt` (both `h × w`,
/// non-zero = object), at the pixel centre; `None` when the prediction is exact.
pub fn corrective_click(pred: &[u8], gt: &[u8], h: usize, w: usize) -> Option<Click> {
    assert_eq!((pred.len(), gt.len()), (h * w, h * w), "masks of the image's size");
    let missed: Vec<bool> = pred.iter().zip(gt).map(|(&p, &g)| g != 0 && p == 0).collect();
    let extra: Vec<bool> = pred.iter().zip(gt).map(|(&p, &g)| p != 0 && g == 0).collect();
    let deepest = |inside: &[bool]| {
        let d = chamfer(inside, h, w);
        // The first pixel of the largest distance (row-major), so the choice is deterministic.
        d.iter().enumerate().filter(|(_, &v)| v > 0).max_by_key(|&(i, &v)| (v, std::cmp::Reverse(i))).map(|(i, &v)| (i, v))
    };
    let best = match (deepest(&missed), deepest(&extra)) {
        (Some(m), Some(e)) => Some(if m.1 >= e.1 { (m.0, true) } else { (e.0, false) }),
        (Some(m), None) => Some((m.0, true)),
        (None, Some(e)) => Some((e.0, false)),
        (None, None) => None,
    }?;
    let (i, positive) = best;
    Some(Click { x: (i % w) as f32 + 0.5, y: (i / w) as f32 + 0.5, positive })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(h: usize, w: usize, y0: usize, y1: usize, x0: usize, x1: usize) -> Vec<u8> {
        let mut m = vec![0u8; h * w];
        for y in y0..y1 {
            for x in x0..x1 {
                m[y * w + x] = 1;
            }
        }
        m
    }

    #[test]
    fn a_missed_object_gets_a_positive_click_in_its_middle() {
        let gt = rect(20, 20, 4, 13, 6, 15);
        let click = corrective_click(&vec![0; 400], &gt, 20, 20).unwrap();
        assert!(click.positive);
        assert_eq!((click.x, click.y), (10.5, 8.5));
    }

    #[test]
    fn a_false_alarm_larger_than_the_miss_gets_a_negative_click() {
        let gt = rect(30, 30, 2, 5, 2, 5);
        let mut pred = rect(30, 30, 10, 25, 10, 25);
        pred[2 * 30 + 2] = 1; // most of the object is missed, but the false alarm is far larger
        let click = corrective_click(&pred, &gt, 30, 30).unwrap();
        assert!(!click.positive);
        assert!((10.0..25.0).contains(&click.x) && (10.0..25.0).contains(&click.y), "{click:?}");
    }

    #[test]
    fn an_exact_answer_needs_no_click() {
        let gt = rect(8, 8, 1, 4, 1, 4);
        assert_eq!(corrective_click(&gt, &gt, 8, 8), None);
    }
}
